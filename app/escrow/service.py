"""Escrow holds: the service API the marketplace calls on accept, approve, auto-release, cancel
and dispute resolution.

    hold(session, builder_id, tester_id, payout_cents, key=..., refs=...)  available -> held
    release(session, hold_id)                 held -> tester payout + platform fee
    void(session, hold_id, status="voided")   held -> builder available ("refunded" for disputes)
    split(session, hold_id, tester_cents)     held -> part to tester, fee pro rata, rest to builder

Each takes the caller's transaction session so the hold commits with the job/submission change.
A hold resolves at most once: the status flip is conditional, a second attempt raises
HoldAlreadyResolved. hold() is idempotent on its key: the caller makes the key before the
transaction (e.g. "assignment:<id>" with the id made from the request), so a retried request gets
the same hold back instead of a second one. The *_now() variants open their own transaction.
"""

from typing import Any

from beanie import PydanticObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from app.config import get_settings
from app.db import duplicate_key_as, run_in_transaction, transition
from app.errors import BalanceOwed, Conflict, HoldAlreadyResolved, NotFound, Unprocessable
from app.escrow.models import EscrowTransaction, HoldStatus, Resolution
from app.kit.money import fee_for, prorate
from app.kit.pagination import PageParams, paginate
from app.kit.timeutil import utcnow
from app.ledger import service as ledger
from app.ledger.accounts import REVENUE, builder_available, builder_held, tester_available


class HoldExists(Conflict):
    code, default_detail = "hold_exists", "A different hold for this reason already exists."


async def hold(
    session: AsyncClientSession,
    builder_id: PydanticObjectId,
    tester_id: PydanticObjectId,
    payout_cents: int,
    *,
    key: str,
    refs: dict[str, Any] | None = None,
) -> EscrowTransaction:
    if payout_cents <= 0:
        raise Unprocessable("payout must be positive")
    fee = fee_for(payout_cents, get_settings().platform_fee_bps)
    if (existing := await EscrowTransaction.find_one({"key": key}, session=session)) is not None:
        if (existing.builder_id, existing.tester_id, existing.amount_cents) != (builder_id, tester_id, payout_cents):
            raise HoldExists()
        return existing  # the same request, retried
    if owed := await ledger.builder_owes(session, builder_id):
        raise BalanceOwed({"owed_cents": owed})
    escrow = EscrowTransaction(
        key=key,
        builder_id=builder_id,
        tester_id=tester_id,
        amount_cents=payout_cents,
        fee_cents=fee,
        refs={k: str(v) for k, v in (refs or {}).items()},
    )
    with duplicate_key_as(HoldExists):
        await escrow.insert(session=session)
    await ledger.post(
        session,
        "escrow.hold",
        f"hold:{escrow.id}",
        [(builder_available(builder_id), -escrow.total_cents), (builder_held(builder_id), escrow.total_cents)],
        refs={"hold_id": escrow.id, **escrow.refs},
    )
    return escrow


async def release(session: AsyncClientSession, hold_id: PydanticObjectId) -> EscrowTransaction:
    """Approve or auto-release: the payout to the tester, the fee to platform revenue."""
    escrow = await _resolve(session, hold_id, "released")
    return await _settle(session, escrow, escrow.amount_cents, escrow.fee_cents, "release")


async def void(
    session: AsyncClientSession, hold_id: PydanticObjectId, status: HoldStatus = "voided"
) -> EscrowTransaction:
    """Cancel (voided) or a dispute refund (refunded): everything back to the builder."""
    if status not in ("voided", "refunded"):
        raise ValueError("void() ends in voided or refunded")
    escrow = await _resolve(session, hold_id, status)
    return await _settle(session, escrow, 0, 0, status)


async def split(session: AsyncClientSession, hold_id: PydanticObjectId, tester_cents: int) -> EscrowTransaction:
    """Partial payout: 0 < tester_cents < payout; the fee follows the tester's share."""
    current = await _get(session, hold_id)
    if not 0 < tester_cents < current.amount_cents:
        raise Unprocessable(f"tester amount must be between 1 and {current.amount_cents - 1} cents")
    escrow = await _resolve(session, hold_id, "split")
    fee = prorate(escrow.fee_cents, tester_cents, escrow.amount_cents)
    return await _settle(session, escrow, tester_cents, fee, "split")


async def _get(session: AsyncClientSession, hold_id: PydanticObjectId) -> EscrowTransaction:
    escrow = await EscrowTransaction.get(hold_id, session=session)
    if escrow is None:
        raise NotFound("escrow hold not found")
    return escrow


async def _resolve(session: AsyncClientSession, hold_id: PydanticObjectId, status: HoldStatus) -> EscrowTransaction:
    """Flip held -> status only if still held: the at-most-once guard."""
    escrow = await transition(EscrowTransaction, hold_id, "held", {"status": status, "resolved_at": utcnow()}, session)
    if escrow is None:
        await _get(session, hold_id)  # 404 when it does not exist at all
        raise HoldAlreadyResolved()
    return escrow


async def _settle(
    session: AsyncClientSession, escrow: EscrowTransaction, tester_cents: int, fee_cents: int, reason: str
) -> EscrowTransaction:
    builder_cents = escrow.total_cents - tester_cents - fee_cents
    postings = [(builder_held(escrow.builder_id), -escrow.total_cents)]
    postings += [(tester_available(escrow.tester_id), tester_cents)] if tester_cents else []
    postings += [(REVENUE, fee_cents)] if fee_cents else []
    postings += await ledger.builder_inflow(session, escrow.builder_id, builder_cents) if builder_cents else []
    await ledger.post(session, f"escrow.{reason}", f"hold:{escrow.id}:resolve", postings,
                      refs={"hold_id": escrow.id, **escrow.refs})
    escrow.resolution = Resolution(tester_cents=tester_cents, fee_cents=fee_cents, builder_cents=builder_cents,
                                   reason=reason)
    await EscrowTransaction.get_pymongo_collection().update_one(
        {"_id": escrow.id}, {"$set": {"resolution": escrow.resolution.model_dump()}}, session=session
    )
    return escrow


# -- own-transaction variants -------------------------------------------------------------------
async def release_now(hold_id: PydanticObjectId) -> EscrowTransaction:
    return await run_in_transaction(lambda s: release(s, hold_id))


async def void_now(hold_id: PydanticObjectId, status: HoldStatus = "voided") -> EscrowTransaction:
    return await run_in_transaction(lambda s: void(s, hold_id, status))


async def split_now(hold_id: PydanticObjectId, tester_cents: int) -> EscrowTransaction:
    return await run_in_transaction(lambda s: split(s, hold_id, tester_cents))


async def hold_now(builder_id: PydanticObjectId, tester_id: PydanticObjectId, payout_cents: int, *, key: str,
                   refs: dict[str, Any] | None = None) -> EscrowTransaction:
    return await run_in_transaction(lambda s: hold(s, builder_id, tester_id, payout_cents, key=key, refs=refs))


# -- reads and invariants -----------------------------------------------------------------------
def visible_filter(user) -> dict[str, Any]:
    if user.role == "admin":
        return {}
    return {"builder_id": user.id} if user.role == "builder" else {"tester_id": user.id}


async def visible_holds(user, status: str | None, page: PageParams) -> tuple[list[EscrowTransaction], str | None]:
    """Builders see holds on their wallet, testers holds in their favour, admins all."""
    return await paginate(EscrowTransaction, visible_filter(user) | ({"status": status} if status else {}), page)


@ledger.register_expectation
async def held_equals_open_holds(session: AsyncClientSession) -> tuple[str, str, dict[str, int]]:
    totals = await ledger.open_totals(session, EscrowTransaction, "held", "builder_id",
                                      {"$add": ["$amount_cents", "$fee_cents"]})
    return "held_equals_open_holds", "held", {builder_held(owner): cents for owner, cents in totals.items()}
