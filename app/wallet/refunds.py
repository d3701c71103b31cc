"""Refunds of unspent deposits to their original payments, oldest lot first, inside the refund window.

    request_refund(builder_id, cents, request_id)
        one transaction: the lots' cents are taken, available -> refund_pending, and one outbox task
        per lot is written; then each task is run right away (the sweep runs any the request did
        not get to, e.g. because the process died)
    submit(refund_id)   the outbox task: one provider refund per lot (idempotency key
                        wallet-refund:<id>); succeeded -> external, refused -> back to available and
                        to the lot; an unknown outcome is retried by the outbox, looking up the
                        provider's refunds first so a refund that did happen is never made twice

The request id comes from the request (its Idempotency-Key), so a retry after a crash resumes the
same refunds instead of making new ones.
"""

import logging
from typing import Any

from beanie import PydanticObjectId
from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession

from app import faults
from app.db import run_in_transaction, transition
from app.errors import BalanceOwed, InsufficientFunds, PaymentProviderError
from app.integrations import payments
from app.kit.idempotency import checkpoint
from app.kit.timeutil import utcnow
from app.ledger import service as ledger
from app.ledger.accounts import EXTERNAL, builder_available, builder_refund_pending
from app.outbox import service as outbox
from app.wallet.models import WalletAllocation, WalletRefund

log = logging.getLogger(__name__)
SUBMIT_TASK = "app.wallet.refunds.submit"


def submit_key(refund_id: Any) -> str:
    return f"wallet-refund:{refund_id}:submit"


async def request_refund(builder_id: PydanticObjectId, amount_cents: int, request_id: str) -> list[WalletRefund]:
    """Reserve the amount against the oldest refundable lots, then refund each lot at the provider."""
    refunds = await run_in_transaction(lambda s: _reserve(s, builder_id, amount_cents, request_id))
    await faults.hit("refunds.after_reserve")
    for refund in refunds:
        if refund.status == "pending":
            await outbox.execute(submit_key(refund.id))
    return await WalletRefund.find({"request_id": request_id}).sort([("created_at", ASCENDING),
                                                                      ("_id", ASCENDING)]).to_list()


async def _reserve(session: AsyncClientSession, builder_id: PydanticObjectId, cents: int,
                   request_id: str) -> list[WalletRefund]:
    if existing := await WalletRefund.find({"request_id": request_id}, session=session).to_list():
        return existing  # the same request, retried
    if owed := await ledger.builder_owes(session, builder_id):
        raise BalanceOwed({"owed_cents": owed})
    available = await ledger.balance(builder_available(builder_id), session)
    if available < cents:
        raise InsufficientFunds({"reason": "available_balance", "requested_cents": cents,
                                 "available_cents": available})
    lots = await _refundable_lots(session, builder_id)
    refundable = sum(lot.remaining_cents for lot in lots)
    if refundable < cents:
        raise InsufficientFunds({"reason": "refundable_deposits", "requested_cents": cents,
                                 "refundable_cents": refundable,
                                 "message": "only deposits inside the refund window can be refunded"})
    refunds = []
    for lot, take in _fifo(lots, cents):
        await _take_from_lot(session, lot, take)
        refund = WalletRefund(id=PydanticObjectId(), builder_id=builder_id, request_id=request_id,
                              allocation_id=lot.id, deposit_id=lot.deposit_id,
                              payment_intent_id=lot.payment_intent_id, amount_cents=take)
        refunds.append(refund)
        await outbox.add(session, SUBMIT_TASK, str(refund.id), key=submit_key(refund.id), hint=False,
                         label=f"refund {take} cents of {lot.payment_intent_id}")
    await WalletRefund.insert_many(refunds, session=session)
    await ledger.post(
        session, "wallet.refund", f"wallet-refund-request:{request_id}",
        [(builder_available(builder_id), -cents), (builder_refund_pending(builder_id), cents)],
        refs={"request_id": request_id},
    )
    await checkpoint(session, "refund_reserved")
    return refunds


async def _refundable_lots(session: AsyncClientSession, builder_id: PydanticObjectId) -> list[WalletAllocation]:
    return await WalletAllocation.find(
        {"builder_id": builder_id, "remaining_cents": {"$gt": 0}, "refundable_until_at": {"$gt": utcnow()}},
        session=session,
    ).sort([("created_at", ASCENDING), ("_id", ASCENDING)]).to_list()


def _fifo(lots: list[WalletAllocation], cents: int) -> list[tuple[WalletAllocation, int]]:
    """(lot, cents taken) oldest first until `cents` is covered."""
    taken = []
    for lot in lots:
        if cents == 0:
            break
        take = min(lot.remaining_cents, cents)
        taken.append((lot, take))
        cents -= take
    return taken


async def _take_from_lot(session: AsyncClientSession, lot: WalletAllocation, cents: int) -> None:
    result = await WalletAllocation.get_pymongo_collection().update_one(
        {"_id": lot.id, "remaining_cents": {"$gte": cents}}, {"$inc": {"remaining_cents": -cents}}, session=session
    )
    if result.matched_count == 0:
        raise InsufficientFunds({"reason": "refundable_deposits", "deposit_id": str(lot.deposit_id)})


# -- the provider refund (outbox task) ------------------------------------------------------------
async def submit(refund_id: str) -> str:
    """Refund one lot at the provider and record the outcome. Raises (so the outbox retries) while
    the outcome is unknown or the provider's refund is still pending."""
    refund = await WalletRefund.get(PydanticObjectId(refund_id))
    if refund is None or refund.status != "pending":
        return "skipped"
    provider = await _existing_provider_refund(refund) if outbox.current_run() > 1 else None
    if provider is None:
        try:
            provider = await payments.create_refund(
                refund.payment_intent_id, refund.amount_cents,
                metadata={"wallet_refund_id": str(refund.id), "request_id": refund.request_id,
                          "builder_id": str(refund.builder_id)},
                idempotency_key=f"wallet-refund:{refund.id}",
            )
        except PaymentProviderError as exc:
            if payments.outcome_unknown(exc):
                raise
            reason = f"provider refused: {exc.detail}"
            return (await run_in_transaction(lambda s: _settle_failed(s, refund, reason, None))).status
    await faults.hit("refunds.after_provider_call")
    return await _record_provider_refund(refund, provider.to_dict())


async def _existing_provider_refund(refund: WalletRefund) -> Any:
    """The provider refund made for this WalletRefund, if an earlier attempt got that far."""
    if refund.provider_refund_id:
        return await payments.retrieve_refund(refund.provider_refund_id)
    for candidate in await payments.list_refunds(refund.payment_intent_id):
        if (candidate.to_dict().get("metadata") or {}).get("wallet_refund_id") == str(refund.id):
            return candidate
    return None


async def _record_provider_refund(refund: WalletRefund, provider: dict[str, Any]) -> str:
    status = provider.get("status")
    if status == "succeeded":
        return (await run_in_transaction(lambda s: _settle_succeeded(s, refund, provider["id"]))).status
    if status in ("failed", "canceled"):
        reason = f"provider refund {status}: {provider.get('failure_reason') or 'no reason given'}"
        return (await run_in_transaction(lambda s: _settle_failed(s, refund, reason, provider["id"]))).status
    # pending / requires_action: remember the provider's id and ask again later
    await run_in_transaction(lambda s: _note_provider_id(s, refund, provider["id"]))
    raise outbox.RetryLater(f"provider refund {provider['id']} is {status}")


async def _settle_succeeded(session: AsyncClientSession, refund: WalletRefund, provider_id: str) -> WalletRefund:
    done = await transition(WalletRefund, refund.id, "pending",
                            {"status": "succeeded", "provider_refund_id": provider_id, "resolved_at": utcnow()},
                            session)
    if done is None:  # settled by a concurrent attempt
        return await _current(session, refund)
    await ledger.post(
        session, "wallet.refund_settled", f"wallet-refund:{refund.id}:settle",
        [(builder_refund_pending(refund.builder_id), -refund.amount_cents), (EXTERNAL, refund.amount_cents)],
        refs=_refund_refs(refund),
    )
    return done


async def _settle_failed(session: AsyncClientSession, refund: WalletRefund, reason: str,
                         provider_id: str | None) -> WalletRefund:
    """The money goes back to available and the lot gets its cents back: nothing is lost."""
    done = await transition(WalletRefund, refund.id, "pending",
                            {"status": "failed", "failure_reason": reason[:500], "provider_refund_id": provider_id,
                             "resolved_at": utcnow()}, session)
    if done is None:
        return await _current(session, refund)
    inflow = await ledger.builder_inflow(session, refund.builder_id, refund.amount_cents)
    await ledger.post(
        session, "wallet.refund_failed", f"wallet-refund:{refund.id}:settle",
        [(builder_refund_pending(refund.builder_id), -refund.amount_cents), *inflow],
        refs=_refund_refs(refund),
    )
    spendable = dict(inflow).get(builder_available(refund.builder_id), 0)  # what settled a debt is gone
    if spendable:
        await WalletAllocation.get_pymongo_collection().update_one(
            {"_id": refund.allocation_id}, {"$inc": {"remaining_cents": spendable}}, session=session)
    return done


async def _note_provider_id(session: AsyncClientSession, refund: WalletRefund, provider_id: str) -> None:
    await transition(WalletRefund, refund.id, "pending", {"provider_refund_id": provider_id}, session)


async def _current(session: AsyncClientSession, refund: WalletRefund) -> WalletRefund:
    return await WalletRefund.get(refund.id, session=session) or refund


def _refund_refs(refund: WalletRefund) -> dict[str, Any]:
    return {"wallet_refund_id": refund.id, "request_id": refund.request_id, "deposit_id": refund.deposit_id,
            "payment_intent_id": refund.payment_intent_id}


async def nudge(refund_id: str) -> None:
    """The provider reports a change on one of our refunds: check it now rather than at the next retry."""
    refund = await WalletRefund.get(PydanticObjectId(refund_id))
    if refund is not None and refund.status == "pending":
        await outbox.revive(submit_key(refund.id))
