"""Deposits: money a builder pays in, which becomes wallet funds only when the provider confirms it.

    create_deposit(user, cents, deposit_id)   quota + pending deposit, then a PaymentIntent to pay
    on_payment_intent(event)                  the ONLY credit path: the signed webhook, re-read at the provider
    expire_abandoned(deposit_id)              a deposit unpaid after DEPOSIT_ABANDON_AFTER_SECONDS is
                                              cancelled at the provider and frees its quota

The deposit id comes from the request (its Idempotency-Key), so a retried request finds the deposit
the first attempt opened and goes on from there instead of opening a second one.
"""

import logging
from datetime import timedelta
from typing import Any

from beanie import PydanticObjectId
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession

from app.config import get_settings
from app.db import run_in_transaction, transition
from app.errors import DepositMismatch, PaymentProviderError
from app.integrations import payments
from app.kit.idempotency import checkpoint
from app.kit.timeutil import utcnow
from app.ledger import service as ledger
from app.ledger.accounts import EXTERNAL, builder_available
from app.payments import inbox
from app.payments import service as payments_service
from app.users.models import User
from app.wallet import quota
from app.wallet.models import Deposit, WalletAllocation

log = logging.getLogger(__name__)
SWEEP_BATCH = 500


async def create_deposit(user: User, amount_cents: int, deposit_id: PydanticObjectId) -> Deposit:
    """Reserve the day's quota with a pending deposit, then open the PaymentIntent the client pays.
    A refusal closes the deposit and frees its quota; an unknown provider outcome leaves it pending
    for a retry of the same request (same deposit, same provider idempotency key)."""
    deposit = await run_in_transaction(lambda s: _open(s, user.id, amount_cents, deposit_id))
    if deposit.payment_intent_id or deposit.status != "pending":
        if deposit.status == "failed" and not deposit.payment_intent_id:
            raise PaymentProviderError({"reason": "provider_rejected", "message": deposit.failure_reason})
        return deposit
    try:
        intent = await payments.create_payment_intent(
            amount_cents, await payments_service.ensure_customer(user),
            metadata={"deposit_id": str(deposit.id), "builder_id": str(user.id)},
            idempotency_key=f"deposit:{deposit.id}",
        )
    except PaymentProviderError as exc:
        if not payments.outcome_unknown(exc):
            reason = f"provider error: {exc.detail}"
            await run_in_transaction(lambda s: _close_unpaid(s, deposit.id, "failed", reason))
        raise
    return await run_in_transaction(lambda s: _attach_intent(s, deposit.id, intent.id, intent.client_secret))


async def _open(session: AsyncClientSession, builder_id: PydanticObjectId, cents: int,
                deposit_id: PydanticObjectId) -> Deposit:
    if (existing := await Deposit.get(deposit_id, session=session)) is not None:
        return existing  # the same request, retried
    deposit = Deposit(id=deposit_id, builder_id=builder_id, amount_cents=cents, day=quota.today())
    await quota.reserve(session, builder_id, deposit.day, cents)
    await deposit.insert(session=session)
    await checkpoint(session, "deposit_opened")
    return deposit


async def _attach_intent(session: AsyncClientSession, deposit_id: PydanticObjectId, intent_id: str,
                         client_secret: str) -> Deposit:
    coll = Deposit.get_pymongo_collection()
    doc = await coll.find_one_and_update(
        {"_id": deposit_id, "payment_intent_id": None},
        {"$set": {"payment_intent_id": intent_id, "client_secret": client_secret}},
        session=session, return_document=ReturnDocument.AFTER,
    )
    return Deposit.model_validate(doc or await coll.find_one({"_id": deposit_id}, session=session))


async def _close_unpaid(session: AsyncClientSession, deposit_id: PydanticObjectId, status: str, reason: str) -> bool:
    """pending -> failed/canceled and free its quota; False when it was no longer pending."""
    deposit = await transition(Deposit, deposit_id, "pending",
                               {"status": status, "failure_reason": reason[:500], "failed_at": utcnow()}, session)
    if deposit is None:
        return False
    await quota.adjust(session, deposit.builder_id, deposit.day, -deposit.amount_cents)
    return True


# -- the provider's webhook: the only way a deposit becomes money --------------------------------
@inbox.handles("payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled")
async def on_payment_intent(event: dict[str, Any]) -> None:
    """Events may be stale, duplicated or out of order, so act on the PaymentIntent as the provider
    has it now. Replays find the deposit already moved and change nothing."""
    intent = (await payments.retrieve_payment_intent(event["data"]["object"]["id"])).to_dict()
    await apply_intent(intent)


async def apply_intent(intent: dict[str, Any]) -> None:
    deposit = await _deposit_for(intent)
    if deposit is None:
        log.info("payment intent %s is not a wallet deposit; ignored", intent["id"])
        return
    _check_matches(deposit, intent)
    if intent["status"] == "succeeded":
        await run_in_transaction(lambda s: _credit(s, deposit, intent["id"]))
    elif intent["status"] == "canceled":
        reason = intent.get("cancellation_reason") or "canceled"
        await run_in_transaction(lambda s: _close_unpaid(s, deposit.id, "canceled", reason))
    elif intent["status"] == "requires_payment_method" and intent.get("last_payment_error"):
        reason = intent["last_payment_error"].get("message") or "payment failed"
        await run_in_transaction(lambda s: _close_unpaid(s, deposit.id, "failed", reason))


async def _deposit_for(intent: dict[str, Any]) -> Deposit | None:
    deposit_id = (intent.get("metadata") or {}).get("deposit_id")
    if isinstance(deposit_id, str) and ObjectId.is_valid(deposit_id):
        return await Deposit.get(PydanticObjectId(deposit_id))
    return await Deposit.find_one({"payment_intent_id": intent["id"]})


def _check_matches(deposit: Deposit, intent: dict[str, Any]) -> None:
    """Never credit a different amount, builder or payment than the deposit asked for."""
    builder = (intent.get("metadata") or {}).get("builder_id")
    if (intent["amount"] != deposit.amount_cents or intent.get("currency") != "usd"
            or deposit.payment_intent_id not in (None, intent["id"]) or builder not in (None, str(deposit.builder_id))):
        raise DepositMismatch({"deposit_id": str(deposit.id), "payment_intent_id": intent["id"]})


async def _credit(session: AsyncClientSession, deposit: Deposit, intent_id: str) -> bool:
    """pending (or failed/canceled, when the customer paid after all) -> succeeded, the ledger credit
    and the refundable lot, together. What the builder owes (a chargeback) is settled first, and
    that part of the lot cannot be refunded. False when already credited."""
    now = utcnow()
    before = await transition(
        Deposit, deposit.id, ["pending", "failed", "canceled"],
        {"status": "succeeded", "succeeded_at": now, "payment_intent_id": intent_id, "failure_reason": None,
         "failed_at": None},
        session, return_before=True,
    )
    if before is None:
        return False
    if before.status != "pending":  # its quota was released; the money counts after all
        await quota.adjust(session, deposit.builder_id, deposit.day, deposit.amount_cents)
    cents = deposit.amount_cents
    inflow = await ledger.builder_inflow(session, deposit.builder_id, cents)
    await ledger.post(session, "wallet.deposit", f"deposit:{deposit.id}", [(EXTERNAL, -cents), *inflow],
                      refs={"deposit_id": deposit.id, "payment_intent_id": intent_id})
    spendable = dict(inflow).get(builder_available(deposit.builder_id), 0)
    lot = WalletAllocation(
        builder_id=deposit.builder_id, deposit_id=deposit.id, payment_intent_id=intent_id,
        amount_cents=cents, remaining_cents=spendable, created_at=now,
        refundable_until_at=now + timedelta(days=get_settings().refund_window_days),
    )
    await lot.insert(session=session)
    return True


# -- abandoned deposits -------------------------------------------------------------------------
async def abandoned_deposit_ids() -> list[str]:
    """Deposits still pending past DEPOSIT_ABANDON_AFTER_SECONDS, oldest first."""
    cutoff = utcnow() - timedelta(seconds=get_settings().deposit_abandon_after_seconds)
    docs = await Deposit.get_pymongo_collection().find(
        {"status": "pending", "created_at": {"$lt": cutoff}}, {"_id": 1}
    ).sort("created_at", 1).limit(SWEEP_BATCH).to_list()
    return [str(doc["_id"]) for doc in docs]


async def expire_abandoned(deposit_id: PydanticObjectId) -> str:
    """Cancel an unpaid deposit at the provider and free its quota; credit it instead if the
    provider says it was paid after all (a webhook we never got)."""
    deposit = await Deposit.get(deposit_id)
    if deposit is None or deposit.status != "pending":
        return "skipped"
    if deposit.payment_intent_id:
        intent = (await payments.retrieve_payment_intent(deposit.payment_intent_id)).to_dict()
        if intent["status"] in ("succeeded", "processing", "requires_capture"):
            await apply_intent(intent)  # paid, or money in flight: never cancel that
            return intent["status"]
        if intent["status"] != "canceled":
            await payments.cancel_payment_intent(deposit.payment_intent_id, f"deposit:{deposit.id}:cancel")
    closed = await run_in_transaction(lambda s: _close_unpaid(s, deposit.id, "canceled", "abandoned: never paid"))
    return "canceled" if closed else "skipped"
