"""Tester payouts: reserve, then transfer to the connected account.

    request_payout(tester, cents)   one transaction: Payout(pending) + available -> payout_pending
    execute_transfer(payout_id)     (task) provider transfer; paid: pending -> external,
                                    refused: pending -> available. Acts only while still pending.
    transfer.reversed webhook       external -> available for the newly reversed amount

A transfer whose outcome is unknown (timeout, 5xx) is never undone: the task raises so RQ retries
it with the same idempotency key, and the stuck-payout sweep re-sends it later.
"""

import logging
from datetime import timedelta
from typing import Any

from beanie import PydanticObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession

from app.config import get_settings
from app.db import after_commit, run_in_transaction, transition
from app.errors import PaymentProviderError, PayoutAccountMissing, PayoutBelowMinimum
from app.escrow.service import tester_available
from app.integrations import payments
from app.kit.timeutil import utcnow
from app.ledger import service as ledger
from app.ledger.models import EXTERNAL, account
from app.payments import inbox
from app.payouts.models import Payout, PayoutStatus
from app.users.models import User
from workers.queues import HIGH, enqueue_async

log = logging.getLogger(__name__)
TRANSFER_TASK = "app.payouts.tasks.transfer"


def tester_pending(tester_id: Any) -> str:
    return account("tester", tester_id, "payout_pending")


# -- request ------------------------------------------------------------------------------------
async def request_payout(tester: User, amount_cents: int) -> Payout:
    minimum = get_settings().min_payout_cents
    if amount_cents < minimum:
        raise PayoutBelowMinimum({"min_payout_cents": minimum})
    if not tester.stripe_account_id or not tester.payouts_enabled:
        raise PayoutAccountMissing()

    async def reserve(session: AsyncClientSession) -> Payout:
        payout = Payout(tester_id=tester.id, amount_cents=amount_cents,
                        destination_account_id=tester.stripe_account_id)
        await payout.insert(session=session)
        await ledger.post(session, "payout.reserve", f"payout:{payout.id}:reserve",
                          [(tester_available(tester.id), -amount_cents), (tester_pending(tester.id), amount_cents)],
                          refs={"payout_id": payout.id})
        after_commit(lambda: enqueue_transfer(payout.id))
        return payout

    return await run_in_transaction(reserve)


async def enqueue_transfer(payout_id: PydanticObjectId) -> None:
    await enqueue_async(HIGH, TRANSFER_TASK, str(payout_id), job_id=f"payout:{payout_id}")  # dedupes repeats


# -- transfer (task) ----------------------------------------------------------------------------
async def execute_transfer(payout_id: PydanticObjectId) -> str:
    payout = await Payout.get(payout_id)
    if payout is None or payout.status != "pending":
        return "skipped"
    try:
        transfer = await payments.create_transfer(
            payout.amount_cents, payout.destination_account_id,
            {"payout_id": str(payout.id), "tester_id": str(payout.tester_id)}, idempotency_key=f"payout:{payout.id}")
    except PaymentProviderError as exc:
        if payments.outcome_unknown(exc):
            raise  # RQ retries with the same idempotency key
        await _resolve(payout, "failed", {"failure_reason": _reason(exc)})
        return "failed"
    await _resolve(payout, "paid", {"transfer_id": transfer.id})
    return "paid"


def _reason(exc: PaymentProviderError) -> str:
    detail = exc.detail if isinstance(exc.detail, dict) else {}
    return str(detail.get("provider_error") or exc.detail)[:500]


async def _resolve(payout: Payout, status: PayoutStatus, fields: dict[str, str]) -> bool:
    """pending -> paid (money leaves to external) or failed (back to available), at most once."""
    target = EXTERNAL if status == "paid" else tester_available(payout.tester_id)
    refs = {"payout_id": str(payout.id), "transfer_id": fields.get("transfer_id")}

    async def settle(session: AsyncClientSession) -> bool:
        flipped = await transition(Payout, payout.id, "pending", {"status": status, "resolved_at": utcnow(), **fields},
                                   session)
        if flipped is None:
            return False
        await ledger.post(session, f"payout.{status}", f"payout:{payout.id}:resolve",
                          [(tester_pending(payout.tester_id), -payout.amount_cents), (target, payout.amount_cents)],
                          refs={k: v for k, v in refs.items() if v})
        return True

    return await run_in_transaction(settle)


async def enqueue_stuck() -> int:
    """Sweep: re-send payouts left pending (lost job, provider outage) while their key is still valid."""
    settings = get_settings()
    now = utcnow()
    stuck = await Payout.find({
        "status": "pending",
        "created_at": {"$lte": now - timedelta(seconds=settings.payout_retry_after_seconds),
                       "$gte": now - timedelta(seconds=settings.payout_retry_max_age_seconds)},
    }).to_list()
    for payout in stuck:
        await enqueue_transfer(payout.id)
    return len(stuck)


# -- reversals (webhook) ------------------------------------------------------------------------
@inbox.handles("transfer.reversed")
async def on_transfer_reversed(event: dict[str, Any]) -> None:
    transfer_id = event["data"]["object"]["id"]
    payout = await Payout.find_one(Payout.transfer_id == transfer_id)
    if payout is None:
        log.warning("transfer.reversed for unknown transfer %s", transfer_id)
        return
    transfer = await payments.retrieve_transfer(transfer_id)  # the current state, not the event's
    await apply_reversal(payout.id, int(transfer.amount_reversed))


async def apply_reversal(payout_id: PydanticObjectId, reversed_total: int) -> Payout | None:
    """Return the newly reversed part to the tester; replays and stale totals change nothing."""

    async def reverse(session: AsyncClientSession) -> Payout | None:
        payout = await Payout.get(payout_id, session=session)
        if payout is None or payout.status not in ("paid", "reversed"):
            return None
        delta = reversed_total - payout.reversed_cents
        if delta <= 0:
            return None
        status = "reversed" if reversed_total >= payout.amount_cents else "paid"
        doc = await Payout.get_pymongo_collection().find_one_and_update(
            {"_id": payout_id, "reversed_cents": payout.reversed_cents},
            {"$set": {"reversed_cents": reversed_total, "status": status}},
            session=session, return_document=ReturnDocument.AFTER)
        if doc is None:
            return None
        await ledger.post(session, "payout.reversal", f"payout:{payout_id}:reversed:{reversed_total}",
                          [(EXTERNAL, -delta), (tester_available(payout.tester_id), delta)],
                          refs={"payout_id": payout_id, "transfer_id": payout.transfer_id})
        return Payout.model_validate(doc)

    return await run_in_transaction(reverse)


# -- reads and invariants -----------------------------------------------------------------------
async def balance(tester_id: PydanticObjectId) -> dict[str, int]:
    names = [tester_available(tester_id), tester_pending(tester_id)]
    found = await ledger.balances(names)
    return {"available_cents": found[names[0]], "pending_cents": found[names[1]]}


@ledger.register_expectation
async def payout_pending_equals_pending_payouts() -> tuple[str, str, dict[str, int]]:
    totals = await ledger.open_totals(Payout, "pending", "tester_id", "$amount_cents")
    return "payout_pending_equals_pending_payouts", "payout_pending", {
        tester_pending(owner): cents for owner, cents in totals.items()
    }
