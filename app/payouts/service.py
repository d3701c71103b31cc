"""Tester payouts: reserve, then transfer to the connected account.

    request_payout(tester, cents, payout_id)   one transaction: Payout(pending), available ->
                                               payout_pending, and the transfer's outbox task
    execute_transfer(payout_id)                (outbox task) provider transfer; paid: pending ->
                                               external, refused: pending -> available. Acts only
                                               while the payout is still pending.
    transfer.reversed webhook                  external -> available for the newly reversed amount

The payout id comes from the request (its Idempotency-Key), so a retried request finds its payout
instead of reserving twice. A transfer whose outcome is unknown (timeout, 5xx) is never undone: the
outbox retries it with the same provider idempotency key until it is paid, refused, or too old
for that key (then it is dead-lettered and reconciliation lists the payout as stuck).
"""

import logging
from typing import Any

from beanie import PydanticObjectId
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession

from app import faults
from app.config import get_settings
from app.db import run_in_transaction, transition
from app.errors import PaymentProviderError, PayoutAccountMissing, PayoutBelowMinimum
from app.integrations import payments
from app.kit.idempotency import checkpoint
from app.kit.pagination import PageParams, paginate
from app.kit.timeutil import utcnow
from app.ledger import service as ledger
from app.ledger.accounts import EXTERNAL, tester_available, tester_payout_pending
from app.outbox import service as outbox
from app.payments import inbox
from app.payouts.models import Payout, PayoutStatus
from app.users.models import User

log = logging.getLogger(__name__)
TRANSFER_TASK = "app.payouts.service.execute_transfer"


# -- request ------------------------------------------------------------------------------------
async def request_payout(tester: User, amount_cents: int, payout_id: PydanticObjectId) -> Payout:
    minimum = get_settings().min_payout_cents
    if amount_cents < minimum:
        raise PayoutBelowMinimum({"min_payout_cents": minimum})
    if not tester.stripe_account_id or not tester.payouts_enabled:
        raise PayoutAccountMissing()

    async def reserve(session: AsyncClientSession) -> Payout:
        if (existing := await Payout.get(payout_id, session=session)) is not None:
            return existing  # the same request, retried
        payout = Payout(id=payout_id, tester_id=tester.id, amount_cents=amount_cents,
                        destination_account_id=tester.stripe_account_id)
        await payout.insert(session=session)
        await ledger.post(session, "payout.reserve", f"payout:{payout.id}:reserve",
                          [(tester_available(tester.id), -amount_cents),
                           (tester_payout_pending(tester.id), amount_cents)],
                          refs={"payout_id": payout.id})
        await outbox.add(session, TRANSFER_TASK, str(payout.id), key=f"payout:{payout.id}:transfer",
                         label=f"payout transfer {amount_cents} cents",
                         max_age_seconds=get_settings().payout_retry_max_age_seconds)
        await checkpoint(session, "payout_reserved")
        return payout

    return await run_in_transaction(reserve)


# -- transfer (outbox task) -----------------------------------------------------------------------
async def execute_transfer(payout_id: str) -> str:
    """Send one payout. A later run (a retry, a replay) first looks for the transfer an earlier run
    may have made (by its transfer group), so none is ever made twice."""
    payout = await Payout.get(PydanticObjectId(payout_id))
    if payout is None or payout.status != "pending":
        return "skipped"
    group = transfer_group(payout.id)
    transfer = await payments.find_transfer(group) if outbox.current_run() > 1 else None
    try:
        transfer = transfer or await payments.create_transfer(
            payout.amount_cents, payout.destination_account_id,
            {"payout_id": str(payout.id), "tester_id": str(payout.tester_id)}, idempotency_key=f"payout:{payout.id}",
            transfer_group=group)
    except PaymentProviderError as exc:
        if payments.outcome_unknown(exc):
            raise  # the outbox retries, looking first, with the same idempotency key
        await _resolve(payout, "failed", {"failure_reason": _reason(exc)})
        return "failed"
    await faults.hit("payouts.transfer.after_provider_call")
    await _resolve(payout, "paid", {"transfer_id": transfer.id})
    return "paid"


def transfer_group(payout_id: Any) -> str:
    return f"payout:{payout_id}"


def _reason(exc: PaymentProviderError) -> str:
    detail = exc.detail if isinstance(exc.detail, dict) else {}
    return str(detail.get("reason") or exc.detail)[:500]


async def _resolve(payout: Payout, status: PayoutStatus, fields: dict[str, str]) -> bool:
    """pending -> paid (money leaves to external) or failed (back to available), at most once. A
    reversal that arrived while the payout was pending is applied with the payment."""
    target = EXTERNAL if status == "paid" else tester_available(payout.tester_id)
    refs = {"payout_id": str(payout.id), "transfer_id": fields.get("transfer_id")}

    async def settle(session: AsyncClientSession) -> bool:
        flipped = await transition(Payout, payout.id, "pending", {"status": status, "resolved_at": utcnow(), **fields},
                                   session)
        if flipped is None:
            return False
        await ledger.post(session, f"payout.{status}", f"payout:{payout.id}:resolve",
                          [(tester_payout_pending(payout.tester_id), -payout.amount_cents),
                           (target, payout.amount_cents)],
                          refs={k: v for k, v in refs.items() if v})
        if status == "paid" and flipped.early_reversed_cents:
            await _reverse(session, payout.id, flipped.early_reversed_cents)
        return True

    return await run_in_transaction(settle)


# -- reversals (webhook) ------------------------------------------------------------------------
@inbox.handles("transfer.reversed")
async def on_transfer_reversed(event: dict[str, Any]) -> None:
    transfer_id = event["data"]["object"]["id"]
    transfer = (await payments.retrieve_transfer(transfer_id)).to_dict()  # the current state, not the event's
    payout_id = (transfer.get("metadata") or {}).get("payout_id")
    await apply_reversal(transfer_id, int(transfer.get("amount_reversed") or 0), payout_id)


async def apply_reversal(transfer_id: str, reversed_total: int, payout_id: str | None = None) -> Payout | None:
    """Return the newly reversed part to the tester; replays and stale totals change nothing. A
    reversal that arrives while its payout is still pending (the transfer happened, its answer is
    not recorded yet) is kept on the payout and applied when the payout is paid. Both write the
    payout document, so the two transactions can never miss each other."""

    async def reverse(session: AsyncClientSession) -> Payout | None:
        payout = await Payout.find_one({"transfer_id": transfer_id}, session=session)
        if payout is not None:
            return await _reverse(session, payout.id, reversed_total)
        if payout_id and ObjectId.is_valid(payout_id):
            kept = await Payout.get_pymongo_collection().update_one(
                {"_id": ObjectId(payout_id), "status": "pending"},
                {"$max": {"early_reversed_cents": reversed_total}}, session=session)
            if kept.matched_count:
                log.info("transfer %s reversed before payout %s recorded it; kept for later", transfer_id, payout_id)
                return None
        log.warning("transfer.reversed for %s matches no payout here", transfer_id)
        return None

    return await run_in_transaction(reverse)


async def _reverse(session: AsyncClientSession, payout_id: PydanticObjectId, reversed_total: int) -> Payout | None:
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


# -- reads and invariants -----------------------------------------------------------------------
async def balance(tester_id: PydanticObjectId) -> dict[str, int]:
    names = [tester_available(tester_id), tester_payout_pending(tester_id)]
    found = await ledger.balances(names)
    return {"available_cents": found[names[0]], "pending_cents": found[names[1]]}


async def payouts(tester_id: PydanticObjectId, page: PageParams) -> tuple[list[Payout], str | None]:
    return await paginate(Payout, {"tester_id": tester_id}, page)


@ledger.register_expectation
async def payout_pending_equals_pending_payouts(session: AsyncClientSession) -> tuple[str, str, dict[str, int]]:
    totals = await ledger.open_totals(session, Payout, "pending", "tester_id", "$amount_cents")
    return "payout_pending_equals_pending_payouts", "payout_pending", {
        tester_payout_pending(owner): cents for owner, cents in totals.items()
    }
