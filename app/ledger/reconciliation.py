"""Reconciliation: compare our money records with the payment provider's, report every difference
and correct nothing (an operator decides what a difference means).

    deposits        Deposit.payment_intent_id        -> PaymentIntent status and amount
    refunds         WalletRefund.provider_refund_id  -> Refund status, amount and payment
    transfers       paid/reversed Payout.transfer_id -> Transfer amount, destination, reversals
    stuck_payouts   payouts still pending after their retry window (no provider call)

Records created within settings.reconciliation_window_days are compared. A check that cannot run
(Connect simulated) is listed under `skipped`, never passed silently.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from app.config import get_settings
from app.errors import PaymentProviderError
from app.integrations import payments
from app.kit.timeutil import utcnow
from app.ledger.models import ReconciliationReport
from app.payouts.models import Payout
from app.wallet.models import Deposit, WalletRefund

Mismatch = dict[str, Any]
# Our status -> the provider statuses that agree with it.
DEPOSIT_STATUSES = {
    "pending": {"requires_payment_method", "requires_confirmation", "requires_action", "processing"},
    "succeeded": {"succeeded"},
    "failed": {"requires_payment_method", "canceled"},
    "canceled": {"canceled"},
}
REFUND_STATUSES = {"pending": {"pending", "requires_action"}, "succeeded": {"succeeded"}, "failed": {"failed", "canceled"}}


class SkipCheck(Exception):
    pass


def _mismatch(kind: str, record: Any, provider_id: str | None, issue: str, ours: dict[str, Any],
              provider: dict[str, Any] | None = None) -> Mismatch:
    return {"kind": kind, "id": str(record.id), "provider_id": provider_id, "issue": issue, "ours": ours,
            "provider": provider or {}}


async def _fetch(kind: str, record: Any, provider_id: str, retrieve: Callable[[str], Awaitable[Any]],
                 ours: dict[str, Any]) -> tuple[dict[str, Any] | None, Mismatch | None]:
    try:
        return (await retrieve(provider_id)).to_dict(), None
    except PaymentProviderError as exc:
        issue = "provider_unreachable" if payments.outcome_unknown(exc) else "missing_at_provider"
        return None, _mismatch(kind, record, provider_id, issue, ours, {"error": exc.detail})


# -- checks: each returns (records compared, mismatches) -----------------------------------------
async def _deposits(since: datetime) -> tuple[int, list[Mismatch]]:
    deposits = await Deposit.find({"created_at": {"$gte": since}, "payment_intent_id": {"$ne": None}}).to_list()
    found: list[Mismatch] = []
    for deposit in deposits:
        ours = {"status": deposit.status, "amount_cents": deposit.amount_cents}
        intent, missing = await _fetch("deposit", deposit, deposit.payment_intent_id, payments.retrieve_payment_intent,
                                       ours)
        if missing:
            found.append(missing)
            continue
        theirs = {"status": intent["status"], "amount_cents": intent["amount"]}
        if intent["amount"] != deposit.amount_cents:
            found.append(_mismatch("deposit", deposit, intent["id"], "amount_mismatch", ours, theirs))
        if intent["status"] not in DEPOSIT_STATUSES.get(deposit.status, set()):
            found.append(_mismatch("deposit", deposit, intent["id"], "status_mismatch", ours, theirs))
    return len(deposits), found


async def _refunds(since: datetime) -> tuple[int, list[Mismatch]]:
    refunds = await WalletRefund.find({"created_at": {"$gte": since}}).to_list()
    found: list[Mismatch] = []
    for refund in refunds:
        ours = {"status": refund.status, "amount_cents": refund.amount_cents,
                "payment_intent_id": refund.payment_intent_id}
        if not refund.provider_refund_id:
            if refund.status == "succeeded":
                found.append(_mismatch("refund", refund, None, "missing_provider_id", ours))
            continue
        theirs, missing = await _fetch("refund", refund, refund.provider_refund_id, payments.retrieve_refund, ours)
        if missing:
            found.append(missing)
            continue
        provider = {"status": theirs["status"], "amount_cents": theirs["amount"],
                    "payment_intent_id": theirs.get("payment_intent")}
        if theirs["amount"] != refund.amount_cents:
            found.append(_mismatch("refund", refund, theirs["id"], "amount_mismatch", ours, provider))
        if theirs["status"] not in REFUND_STATUSES.get(refund.status, set()):
            found.append(_mismatch("refund", refund, theirs["id"], "status_mismatch", ours, provider))
        if theirs.get("payment_intent") != refund.payment_intent_id:
            found.append(_mismatch("refund", refund, theirs["id"], "payment_mismatch", ours, provider))
    return len(refunds), found


async def _transfers(since: datetime) -> tuple[int, list[Mismatch]]:
    if get_settings().stripe_simulate_connect:
        raise SkipCheck("Connect is simulated (STRIPE_SIMULATE_CONNECT): the provider holds no transfers")
    payouts = await Payout.find({"created_at": {"$gte": since}, "status": {"$in": ["paid", "reversed"]}}).to_list()
    found: list[Mismatch] = []
    for payout in payouts:
        ours = {"status": payout.status, "amount_cents": payout.amount_cents,
                "destination": payout.destination_account_id, "reversed_cents": payout.reversed_cents}
        transfer, missing = await _fetch("payout", payout, payout.transfer_id, payments.retrieve_transfer, ours)
        if missing:
            found.append(missing)
            continue
        theirs = {"amount_cents": transfer["amount"], "destination": transfer.get("destination"),
                  "reversed_cents": transfer.get("amount_reversed", 0)}
        for field, issue in (("amount_cents", "amount_mismatch"), ("destination", "destination_mismatch"),
                             ("reversed_cents", "reversal_mismatch")):
            if ours[field] != theirs[field]:
                found.append(_mismatch("payout", payout, transfer["id"], issue, ours, theirs))
    return len(payouts), found


async def _stuck_payouts(_since: datetime) -> tuple[int, list[Mismatch]]:
    cutoff = utcnow() - timedelta(seconds=get_settings().payout_retry_max_age_seconds)
    stuck = await Payout.find({"status": "pending", "created_at": {"$lt": cutoff}}).to_list()
    return len(stuck), [
        _mismatch("payout", p, None, "stuck_pending", {"amount_cents": p.amount_cents, "created_at": p.created_at})
        for p in stuck
    ]


CHECKS: dict[str, Callable[[datetime], Awaitable[tuple[int, list[Mismatch]]]]] = {
    "deposits": _deposits, "refunds": _refunds, "transfers": _transfers, "stuck_payouts": _stuck_payouts,
}


async def reconcile() -> ReconciliationReport:
    """Run every check and store one report."""
    report = ReconciliationReport(started_at=utcnow())
    since = report.started_at - timedelta(days=get_settings().reconciliation_window_days)
    for name, check in CHECKS.items():
        try:
            report.checked[name], mismatches = await check(since)
        except SkipCheck as skip:
            report.skipped[name] = str(skip)
            continue
        report.mismatches.extend(mismatches)
    report.ok = not report.mismatches
    report.finished_at = utcnow()
    await report.insert()
    return report
