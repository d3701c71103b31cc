"""The builder wallet: deposits, FIFO refunds to the original payments, the daily deposit limit.

    create_deposit(user, cents)      quota + pending deposit, then a PaymentIntent for the client to pay
    apply_payment_intent_event(ev)   the ONLY credit path: the provider's signed webhook, re-read at the provider
    request_refund(builder_id, cents)  lots oldest first: available -> refund_pending, then one provider
                                     refund per lot; success -> external, failure -> back to available
    retry_refund(refund_id)          the sweep's job for refunds still pending after REFUND_STALE_AFTER

Accounts: builder:{id}:available (spendable), builder:{id}:held (escrow), builder:{id}:refund_pending
(refunds in flight). Every money write runs in run_in_transaction(); provider calls happen after commit.
"""

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from beanie import PydanticObjectId
from bson import ObjectId
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession

from app.config import get_settings
from app.db import run_in_transaction, transition
from app.errors import DailyLimitExceeded, DepositMismatch, InsufficientFunds, NotFound, PaymentProviderError
from app.escrow.service import builder_available, builder_held
from app.integrations import payments
from app.kit.pagination import PageParams, paginate
from app.kit.timeutil import utcnow
from app.ledger import service as ledger
from app.ledger.models import EXTERNAL, Journal, account
from app.ledger.schemas import Entry, EntryLine
from app.payments import inbox
from app.payments import service as payments_service
from app.users.models import User
from app.wallet.models import Deposit, DepositQuota, WalletAllocation, WalletRefund

log = logging.getLogger(__name__)

REFUND_STALE_AFTER = timedelta(minutes=10)
STALE_SWEEP_BATCH = 500


def builder_refund_pending(builder_id: Any) -> str:
    return account("builder", builder_id, "refund_pending")


def wallet_accounts(builder_id: Any) -> list[str]:
    return [builder_available(builder_id), builder_held(builder_id), builder_refund_pending(builder_id)]


# -- daily deposit limit ------------------------------------------------------------------------
# One quota document per builder and UTC day holds pending + succeeded deposit cents. The guarded
# $inc runs in the deposit's transaction, so two concurrent deposits cannot both pass the limit.
def _today() -> str:
    return utcnow().date().isoformat()


def _quota_id(builder_id: Any, day: str) -> str:
    return f"{builder_id}:{day}"


def _quota_expiry(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=2)


async def _reserve_quota(session: AsyncClientSession, builder_id: PydanticObjectId, day: str, cents: int) -> None:
    limit = get_settings().daily_deposit_limit_cents
    coll = DepositQuota.get_pymongo_collection()
    quota_id = _quota_id(builder_id, day)
    guarded = await coll.update_one(
        {"_id": quota_id, "reserved_cents": {"$lte": limit - cents}}, {"$inc": {"reserved_cents": cents}},
        session=session,
    )
    if guarded.matched_count:
        return
    current = await coll.find_one({"_id": quota_id}, session=session)
    if current is not None or cents > limit:
        used = current["reserved_cents"] if current else 0
        raise DailyLimitExceeded({"daily_limit_cents": limit, "deposited_today_cents": used, "requested_cents": cents})
    quota = DepositQuota(id=quota_id, builder_id=builder_id, day=day, reserved_cents=cents, expires_at=_quota_expiry(day))
    await quota.insert(session=session)


async def _adjust_quota(session: AsyncClientSession, deposit: Deposit, cents: int) -> None:
    """Unguarded: releasing a closed deposit, or re-counting one whose money arrived after all."""
    await DepositQuota.get_pymongo_collection().update_one(
        {"_id": _quota_id(deposit.builder_id, deposit.day)},
        {"$inc": {"reserved_cents": cents},
         "$setOnInsert": {"builder_id": deposit.builder_id, "day": deposit.day,
                          "expires_at": _quota_expiry(deposit.day)}},
        upsert=True, session=session,
    )


# -- deposits -----------------------------------------------------------------------------------
async def create_deposit(user: User, amount_cents: int) -> Deposit:
    """Reserve the day's quota with a pending deposit, then open the PaymentIntent the client pays.
    A provider failure closes the deposit and frees its quota before the 502 goes out."""
    deposit = await run_in_transaction(lambda s: _open_deposit(s, user.id, amount_cents))
    try:
        intent = await payments.create_payment_intent(
            amount_cents, await payments_service.ensure_customer(user),
            metadata={"deposit_id": str(deposit.id), "builder_id": str(user.id)},
            idempotency_key=f"deposit:{deposit.id}",
        )
    except PaymentProviderError as exc:
        reason = f"provider error: {exc.detail}"
        await run_in_transaction(lambda s: _close_unpaid(s, deposit.id, "failed", reason))
        raise
    return await run_in_transaction(lambda s: _attach_intent(s, deposit.id, intent.id, intent.client_secret))


async def _open_deposit(session: AsyncClientSession, builder_id: PydanticObjectId, cents: int) -> Deposit:
    deposit = Deposit(builder_id=builder_id, amount_cents=cents, day=_today())
    await _reserve_quota(session, builder_id, deposit.day, cents)
    await deposit.insert(session=session)
    return deposit


async def _attach_intent(session: AsyncClientSession, deposit_id: PydanticObjectId, intent_id: str,
                         client_secret: str) -> Deposit:
    doc = await Deposit.get_pymongo_collection().find_one_and_update(
        {"_id": deposit_id}, {"$set": {"payment_intent_id": intent_id, "client_secret": client_secret}},
        session=session, return_document=ReturnDocument.AFTER,
    )
    return Deposit.model_validate(doc)


async def _close_unpaid(session: AsyncClientSession, deposit_id: PydanticObjectId, status: str, reason: str) -> bool:
    """pending -> failed/canceled and free its quota; False when it was no longer pending."""
    deposit = await transition(Deposit, deposit_id, "pending",
                               {"status": status, "failure_reason": reason[:500], "failed_at": utcnow()}, session)
    if deposit is None:
        return False
    await _adjust_quota(session, deposit, -deposit.amount_cents)
    return True


# -- the provider's webhook: the only way a deposit becomes money --------------------------------
@inbox.handles("payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled")
async def apply_payment_intent_event(event: dict[str, Any]) -> None:
    """Events may be stale, duplicated or out of order, so act on the PaymentIntent as the provider
    has it now. Replays find the deposit already moved and change nothing."""
    intent = (await payments.retrieve_payment_intent(event["data"]["object"]["id"])).to_dict()
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
    """pending (or failed, when the customer paid after a decline) -> succeeded, the ledger credit
    and the refundable lot, together. False when already credited."""
    now = utcnow()
    before = await transition(
        Deposit, deposit.id, ["pending", "failed"],
        {"status": "succeeded", "succeeded_at": now, "payment_intent_id": intent_id, "failure_reason": None,
         "failed_at": None},
        session, return_before=True,
    )
    if before is None:
        return False
    if before.status == "failed":  # its quota was released; the money counts after all
        await _adjust_quota(session, deposit, deposit.amount_cents)
    await ledger.post(
        session, "wallet.deposit", f"deposit:{deposit.id}",
        [(EXTERNAL, -deposit.amount_cents), (builder_available(deposit.builder_id), deposit.amount_cents)],
        refs={"deposit_id": deposit.id, "payment_intent_id": intent_id},
    )
    lot = WalletAllocation(
        builder_id=deposit.builder_id, deposit_id=deposit.id, payment_intent_id=intent_id,
        amount_cents=deposit.amount_cents, remaining_cents=deposit.amount_cents, created_at=now,
        refundable_until_at=now + timedelta(days=get_settings().refund_window_days),
    )
    await lot.insert(session=session)
    return True


# -- refunds ------------------------------------------------------------------------------------
async def request_refund(builder_id: PydanticObjectId, amount_cents: int) -> tuple[str, list[WalletRefund]]:
    """Reserve the amount against the oldest refundable lots, then refund each lot at the provider."""
    request_id = str(ObjectId())
    refunds = await run_in_transaction(lambda s: _reserve_refund(s, builder_id, amount_cents, request_id))
    return request_id, [await _submit(refund, look_up_first=False) for refund in refunds]


async def _reserve_refund(session: AsyncClientSession, builder_id: PydanticObjectId, cents: int,
                          request_id: str) -> list[WalletRefund]:
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
        refunds.append(WalletRefund(
            id=PydanticObjectId(), builder_id=builder_id, request_id=request_id, allocation_id=lot.id,
            deposit_id=lot.deposit_id, payment_intent_id=lot.payment_intent_id, amount_cents=take,
        ))
    await WalletRefund.insert_many(refunds, session=session)
    await ledger.post(
        session, "wallet.refund", f"wallet-refund-request:{request_id}",
        [(builder_available(builder_id), -cents), (builder_refund_pending(builder_id), cents)],
        refs={"request_id": request_id},
    )
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


async def _submit(refund: WalletRefund, *, look_up_first: bool) -> WalletRefund:
    """One lot's provider refund (idempotency key wallet-refund:{id}), then its outcome recorded.
    An unknown outcome (network, 5xx) stays pending for the sweep; a refusal returns the funds."""
    try:
        provider = await _existing_provider_refund(refund) if look_up_first else None
        provider = provider or await payments.create_refund(
            refund.payment_intent_id, refund.amount_cents,
            metadata={"wallet_refund_id": str(refund.id), "request_id": refund.request_id,
                      "builder_id": str(refund.builder_id)},
            idempotency_key=f"wallet-refund:{refund.id}",
        )
    except PaymentProviderError as exc:
        if payments.outcome_unknown(exc):
            log.warning("refund %s outcome unknown, left pending for the sweep: %s", refund.id, exc.detail)
            return refund
        reason = f"provider refused: {exc.detail}"
        return await run_in_transaction(lambda s: _settle_failed(s, refund, reason, None))
    return await _record_provider_refund(refund, provider.to_dict())


async def _existing_provider_refund(refund: WalletRefund) -> Any:
    """The provider refund made for this WalletRefund, if an earlier attempt got that far."""
    if refund.provider_refund_id:
        return await payments.retrieve_refund(refund.provider_refund_id)
    for candidate in await payments.list_refunds(refund.payment_intent_id):
        if (candidate.to_dict().get("metadata") or {}).get("wallet_refund_id") == str(refund.id):
            return candidate
    return None


async def _record_provider_refund(refund: WalletRefund, provider: dict[str, Any]) -> WalletRefund:
    status = provider.get("status")
    if status == "succeeded":
        return await run_in_transaction(lambda s: _settle_succeeded(s, refund, provider["id"]))
    if status in ("failed", "canceled"):
        reason = f"provider refund {status}: {provider.get('failure_reason') or 'no reason given'}"
        return await run_in_transaction(lambda s: _settle_failed(s, refund, reason, provider["id"]))
    # pending / requires_action: remember the provider's id; the sweep asks again later
    return await run_in_transaction(lambda s: _note_provider_id(s, refund, provider["id"]))


async def _flip_refund(session: AsyncClientSession, refund: WalletRefund, changes: dict[str, Any]) -> WalletRefund | None:
    return await transition(WalletRefund, refund.id, "pending", changes, session)


async def _current(session: AsyncClientSession, refund: WalletRefund) -> WalletRefund:
    return await WalletRefund.get(refund.id, session=session) or refund


async def _settle_succeeded(session: AsyncClientSession, refund: WalletRefund, provider_id: str) -> WalletRefund:
    done = await _flip_refund(session, refund, {"status": "succeeded", "provider_refund_id": provider_id,
                                                "resolved_at": utcnow()})
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
    done = await _flip_refund(session, refund, {"status": "failed", "failure_reason": reason[:500],
                                                "provider_refund_id": provider_id, "resolved_at": utcnow()})
    if done is None:
        return await _current(session, refund)
    await ledger.post(
        session, "wallet.refund_failed", f"wallet-refund:{refund.id}:settle",
        [(builder_refund_pending(refund.builder_id), -refund.amount_cents),
         (builder_available(refund.builder_id), refund.amount_cents)],
        refs=_refund_refs(refund),
    )
    await WalletAllocation.get_pymongo_collection().update_one(
        {"_id": refund.allocation_id}, {"$inc": {"remaining_cents": refund.amount_cents}}, session=session
    )
    return done


async def _note_provider_id(session: AsyncClientSession, refund: WalletRefund, provider_id: str) -> WalletRefund:
    return await _flip_refund(session, refund, {"provider_refund_id": provider_id}) or await _current(session, refund)


def _refund_refs(refund: WalletRefund) -> dict[str, Any]:
    return {"wallet_refund_id": refund.id, "request_id": refund.request_id, "deposit_id": refund.deposit_id,
            "payment_intent_id": refund.payment_intent_id}


async def stale_refund_ids(now: datetime | None = None) -> list[str]:
    cutoff = (now or utcnow()) - REFUND_STALE_AFTER
    docs = await WalletRefund.get_pymongo_collection().find(
        {"status": "pending", "created_at": {"$lt": cutoff}}, {"_id": 1}
    ).sort("created_at", ASCENDING).limit(STALE_SWEEP_BATCH).to_list()
    return [str(d["_id"]) for d in docs]


async def retry_refund(refund_id: str) -> str:
    """Finish one stale refund: find the provider's refund, or create it with the same key."""
    refund = await WalletRefund.get(PydanticObjectId(refund_id))
    if refund is None or refund.status != "pending":
        return "skipped"
    return (await _submit(refund, look_up_first=True)).status


# -- reads --------------------------------------------------------------------------------------
async def wallet_summary(builder_id: PydanticObjectId) -> dict[str, int]:
    available, held, refund_pending = wallet_accounts(builder_id)
    balances = await ledger.balances([available, held, refund_pending])
    quota = await DepositQuota.get(_quota_id(builder_id, _today()))
    return {
        "available_cents": balances[available], "held_cents": balances[held],
        "refund_pending_cents": balances[refund_pending],
        "deposited_today_cents": quota.reserved_cents if quota else 0,
        "daily_limit_cents": get_settings().daily_deposit_limit_cents,
    }


async def entries(builder_id: PydanticObjectId, page: PageParams) -> tuple[list[Entry], str | None]:
    """The caller's journal entries, newest first, one item per journal."""
    names = wallet_accounts(builder_id)
    available = builder_available(builder_id)
    journals, nxt = await paginate(Journal, {"accounts": {"$in": names}}, page)
    items = []
    for journal in journals:
        lines = [EntryLine(account=p.account, amount_cents=p.amount) for p in journal.postings if p.account in names]
        delta = sum(line.amount_cents for line in lines if line.account == available)
        items.append(Entry.of(journal, available_delta_cents=delta, lines=lines))
    return items, nxt


async def deposits(builder_id: PydanticObjectId, page: PageParams) -> tuple[list[Deposit], str | None]:
    return await paginate(Deposit, {"builder_id": builder_id}, page)


async def get_deposit(builder_id: PydanticObjectId, deposit_id: ObjectId) -> Deposit:
    deposit = await Deposit.find_one({"_id": deposit_id, "builder_id": builder_id})
    if deposit is None:
        raise NotFound("deposit not found")
    return deposit


async def refunds(builder_id: PydanticObjectId, page: PageParams) -> tuple[list[WalletRefund], str | None]:
    return await paginate(WalletRefund, {"builder_id": builder_id}, page)


# -- invariants ---------------------------------------------------------------------------------
@ledger.register_expectation
async def refund_pending_equals_pending_refunds() -> tuple[str, str, dict[str, int]]:
    totals = await ledger.open_totals(WalletRefund, "pending", "builder_id", "$amount_cents")
    return "refund_pending_equals_pending_refunds", "refund_pending", {
        builder_refund_pending(owner): cents for owner, cents in totals.items()
    }
