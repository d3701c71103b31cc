"""Money the provider moved without us: card disputes (chargebacks) and refunds made outside the
app (e.g. in the Stripe dashboard). Both take money back from a builder's deposit.

The builder's available balance pays first. What it cannot cover becomes a receivable
(builder:<id>:receivable, at or below zero): the only way a builder's balance goes negative. While
a builder owes, refunds are refused (BalanceOwed) and every new deposit settles the debt before it
becomes spendable (deposits._credit). Each provider movement is applied once, keyed by the
provider's own id (a dispute's balance transactions, a refund's id), so redeliveries and
out-of-order events converge; an event about a deposit not credited yet is retried later.
"""

import logging
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from app.db import run_in_transaction
from app.errors import PaymentProviderError
from app.integrations import payments
from app.kit.timeutil import utcnow
from app.ledger import service as ledger
from app.ledger.accounts import EXTERNAL, builder_available, builder_receivable
from app.outbox.service import RetryLater
from app.payments import inbox
from app.wallet import refunds
from app.wallet.models import Chargeback, Deposit, ExternalRefund, WalletAllocation

log = logging.getLogger(__name__)


# -- disputes -----------------------------------------------------------------------------------
@inbox.handles("charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed",
               "charge.dispute.funds_withdrawn", "charge.dispute.funds_reinstated")
async def on_dispute(event: dict[str, Any]) -> None:
    dispute = await _current_dispute(event["data"]["object"])
    deposit = await _credited_deposit(dispute.get("payment_intent"))
    if deposit is None:
        await run_in_transaction(lambda s: _store_dispute(s, dispute, None))
        log.warning("dispute %s is on no deposit of ours; recorded for reconciliation", dispute["id"])
        return
    await run_in_transaction(lambda s: _apply_dispute(s, dispute, deposit))


async def _current_dispute(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The dispute as the provider has it now; the signed event's copy where the provider has no
    dispute API (localstripe)."""
    try:
        return (await payments.retrieve_dispute(snapshot["id"])).to_dict()
    except PaymentProviderError as exc:
        if payments.outcome_unknown(exc):
            raise
        return snapshot


async def _credited_deposit(payment_intent_id: str | None) -> Deposit | None:
    """The deposit a provider movement is about; RetryLater while its credit has not landed yet."""
    if not payment_intent_id:
        return None
    deposit = await Deposit.find_one({"payment_intent_id": payment_intent_id})
    if deposit is not None and deposit.status != "succeeded":
        raise RetryLater(f"deposit {deposit.id} is not credited yet")
    return deposit


async def _apply_dispute(session: AsyncClientSession, dispute: dict[str, Any], deposit: Deposit) -> None:
    record = await _store_dispute(session, dispute, deposit)
    for txn in dispute.get("balance_transactions") or []:
        txn_id = txn["id"] if isinstance(txn, dict) else txn
        amount = int(txn["amount"]) if isinstance(txn, dict) else 0
        if txn_id in record.balance_transactions or amount == 0:
            continue
        if amount < 0:
            await _take_back(session, deposit, -amount, "wallet.chargeback", f"chargeback:{dispute['id']}:{txn_id}",
                             {"dispute_id": dispute["id"], "balance_transaction": txn_id})
        else:
            await _give_back(session, deposit, amount, f"chargeback:{dispute['id']}:{txn_id}",
                             {"dispute_id": dispute["id"], "balance_transaction": txn_id})
        await Chargeback.get_pymongo_collection().update_one(
            {"_id": dispute["id"]},
            {"$push": {"balance_transactions": txn_id},
             "$inc": {"withdrawn_cents": max(0, -amount), "reinstated_cents": max(0, amount)}}, session=session)


async def _store_dispute(session: AsyncClientSession, dispute: dict[str, Any], deposit: Deposit | None) -> Chargeback:
    coll = Chargeback.get_pymongo_collection()
    await coll.update_one(
        {"_id": dispute["id"]},
        {"$set": {"status": dispute.get("status", "needs_response"), "reason": dispute.get("reason"),
                  "amount_cents": int(dispute.get("amount") or 0), "updated_at": utcnow()},
         "$setOnInsert": {"builder_id": deposit.builder_id if deposit else None,
                          "deposit_id": deposit.id if deposit else None,
                          "payment_intent_id": dispute.get("payment_intent"), "withdrawn_cents": 0,
                          "reinstated_cents": 0, "balance_transactions": [], "created_at": utcnow()}},
        upsert=True, session=session)
    return Chargeback.model_validate(await coll.find_one({"_id": dispute["id"]}, session=session))


# -- refunds made outside the app ---------------------------------------------------------------------
@inbox.handles("charge.refunded", "charge.refund.updated")
async def on_charge_refund(event: dict[str, Any]) -> None:
    """Re-read the payment's refunds at the provider: ours are nudged to settle, the others are
    taken back from the builder once each."""
    payment_intent_id = event["data"]["object"].get("payment_intent")
    deposit = await _credited_deposit(payment_intent_id)
    if deposit is None:
        return
    for provider_refund in await payments.list_refunds(payment_intent_id):
        data = provider_refund.to_dict()
        ours = (data.get("metadata") or {}).get("wallet_refund_id")
        if ours:
            await refunds.nudge(ours)
        elif data.get("status") == "succeeded":
            await run_in_transaction(lambda s, d=data: _apply_external_refund(s, deposit, d))


async def _apply_external_refund(session: AsyncClientSession, deposit: Deposit, data: dict[str, Any]) -> None:
    if await ExternalRefund.get(data["id"], session=session) is not None:
        return
    cents = int(data["amount"])
    await ExternalRefund(id=data["id"], builder_id=deposit.builder_id, deposit_id=deposit.id,
                         payment_intent_id=deposit.payment_intent_id, amount_cents=cents).insert(session=session)
    await _take_back(session, deposit, cents, "wallet.external_refund", f"external-refund:{data['id']}",
                     {"provider_refund_id": data["id"]})


# -- the ledger side ----------------------------------------------------------------------------------
async def _take_back(session: AsyncClientSession, deposit: Deposit, cents: int, journal_type: str, key: str,
                     refs: dict[str, Any]) -> None:
    """Money left the platform: from available as far as it goes, the rest becomes owed. The lot
    loses what can no longer be refunded."""
    builder = deposit.builder_id
    from_available = min(cents, max(0, await ledger.balance(builder_available(builder), session)))
    postings = [(EXTERNAL, cents), (builder_available(builder), -from_available),
                (builder_receivable(builder), -(cents - from_available))]
    await ledger.post(session, journal_type, key, [p for p in postings if p[1]],
                      refs={"deposit_id": deposit.id, "payment_intent_id": deposit.payment_intent_id, **refs})
    lot = await WalletAllocation.find_one({"deposit_id": deposit.id}, session=session)
    if lot is not None and lot.remaining_cents:
        await WalletAllocation.get_pymongo_collection().update_one(
            {"_id": lot.id}, {"$inc": {"remaining_cents": -min(cents, lot.remaining_cents)}}, session=session)


async def _give_back(session: AsyncClientSession, deposit: Deposit, cents: int, key: str, refs: dict[str, Any]) -> None:
    """A won dispute returns the money: it settles what is owed first, the rest is spendable again."""
    inflow = await ledger.builder_inflow(session, deposit.builder_id, cents)
    await ledger.post(session, "wallet.chargeback_reinstated", key, [(EXTERNAL, -cents), *inflow],
                      refs={"deposit_id": deposit.id, "payment_intent_id": deposit.payment_intent_id, **refs})
