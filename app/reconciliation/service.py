"""Reconciliation: compare our money records with the payment provider's, both ways, report every
difference and correct nothing (an operator decides what a difference means).

From our records to the provider's:
    deposits        Deposit.payment_intent_id        -> PaymentIntent status and amount
    refunds         WalletRefund.provider_refund_id  -> Refund status, amount and payment
    transfers       paid/reversed Payout.transfer_id -> Transfer amount, destination, reversals
    stuck_payouts   payouts still pending after their retry window (no provider call)
    chargebacks     disputes on our deposits that are open or lost (money the provider took back)
From the provider's objects to ours:
    provider_payments   succeeded PaymentIntents with no deposit (and no membership invoice) here
    provider_refunds    refunds of our deposits' payments that we did not record: made outside the
                        app, or a second refund for one of ours
    provider_transfers  transfers of a payout's group other than the one the payout recorded
    provider_disputes   disputes we have no record of

Records and provider objects created within settings.reconciliation_window_days are compared. The
provider's objects are listed once per run, page by page, so a run makes a handful of list calls
rather than one call per record. A check that cannot run (Connect simulated, no dispute API on
localstripe) is listed under `skipped`, never passed silently; one that fails is a mismatch.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from app.config import get_settings
from app.errors import PaymentProviderError
from app.integrations import payments
from app.kit.pagination import PageParams, paginate
from app.kit.timeutil import utcnow
from app.payouts.models import Payout
from app.reconciliation.models import ReconciliationReport
from app.wallet.models import Chargeback, Deposit, ExternalRefund, WalletRefund

Mismatch = dict[str, Any]
MAX_STORED_MISMATCHES = 1_000  # a report is one document; the count says how many there were
# Our status -> the provider statuses that agree with it.
DEPOSIT_STATUSES = {
    "pending": {"requires_payment_method", "requires_confirmation", "requires_action", "processing"},
    "succeeded": {"succeeded"},
    "failed": {"requires_payment_method", "canceled"},
    "canceled": {"canceled"},
}
REFUND_STATUSES = {"pending": {"pending", "requires_action"}, "succeeded": {"succeeded"},
                   "failed": {"failed", "canceled"}}
SETTLED_DISPUTES = {"won", "warning_closed"}


class SkipCheck(Exception):
    pass


class ProviderView:
    """The provider's payments and refunds of the window, listed once and looked up by id; an
    object older than the window is fetched on its own."""

    def __init__(self, since: datetime) -> None:
        self.since = int(since.timestamp())
        self._listed: dict[str, dict[str, dict[str, Any]] | PaymentProviderError] = {}

    async def intents(self) -> dict[str, dict[str, Any]]:
        return await self._list("intents", payments.list_payment_intents)

    async def refunds(self) -> dict[str, dict[str, Any]]:
        return await self._list("refunds", payments.list_refunds_since)

    async def _list(self, name: str, lister: Callable[[int], Awaitable[list[Any]]]) -> dict[str, dict[str, Any]]:
        """Listed once; a listing that failed fails every check that needs it once, not per record."""
        if name not in self._listed:
            try:
                self._listed[name] = {item.id: item.to_dict() for item in await lister(self.since)}
            except PaymentProviderError as exc:
                self._listed[name] = exc
        listed = self._listed[name]
        if isinstance(listed, PaymentProviderError):
            raise listed
        return listed

    async def intent(self, intent_id: str) -> dict[str, Any]:
        return (await self.intents()).get(intent_id) or (await payments.retrieve_payment_intent(intent_id)).to_dict()

    async def refund(self, refund_id: str) -> dict[str, Any]:
        return (await self.refunds()).get(refund_id) or (await payments.retrieve_refund(refund_id)).to_dict()


def _mismatch(kind: str, record_id: Any, provider_id: str | None, issue: str, ours: dict[str, Any],
              provider: dict[str, Any] | None = None) -> Mismatch:
    return {"kind": kind, "id": str(record_id) if record_id is not None else None, "provider_id": provider_id,
            "issue": issue, "ours": ours, "provider": provider or {}}


async def _fetch(kind: str, record: Any, provider_id: str, fetch: Callable[[str], Awaitable[dict[str, Any]]],
                 ours: dict[str, Any]) -> tuple[dict[str, Any] | None, Mismatch | None]:
    try:
        return await fetch(provider_id), None
    except PaymentProviderError as exc:
        issue = "provider_unreachable" if payments.outcome_unknown(exc) else "missing_at_provider"
        return None, _mismatch(kind, record.id, provider_id, issue, ours, {"error": exc.detail})


# -- ours -> theirs: each check returns (records compared, mismatches) ------------------------------
async def _deposits(since: datetime, provider: ProviderView) -> tuple[int, list[Mismatch]]:
    deposits = await Deposit.find({"created_at": {"$gte": since}, "payment_intent_id": {"$ne": None}}).to_list()
    await provider.intents()  # a failed listing fails this check once
    found: list[Mismatch] = []
    for deposit in deposits:
        ours = {"status": deposit.status, "amount_cents": deposit.amount_cents}
        intent, missing = await _fetch("deposit", deposit, deposit.payment_intent_id, provider.intent, ours)
        if missing:
            found.append(missing)
            continue
        theirs = {"status": intent["status"], "amount_cents": intent["amount"]}
        if intent["amount"] != deposit.amount_cents:
            found.append(_mismatch("deposit", deposit.id, intent["id"], "amount_mismatch", ours, theirs))
        if intent["status"] not in DEPOSIT_STATUSES.get(deposit.status, set()):
            found.append(_mismatch("deposit", deposit.id, intent["id"], "status_mismatch", ours, theirs))
    return len(deposits), found


async def _refunds(since: datetime, provider: ProviderView) -> tuple[int, list[Mismatch]]:
    refunds = await WalletRefund.find({"created_at": {"$gte": since}}).to_list()
    await provider.refunds()
    found: list[Mismatch] = []
    for refund in refunds:
        ours = {"status": refund.status, "amount_cents": refund.amount_cents,
                "payment_intent_id": refund.payment_intent_id}
        if not refund.provider_refund_id:
            if refund.status == "succeeded":
                found.append(_mismatch("refund", refund.id, None, "missing_provider_id", ours))
            continue
        theirs, missing = await _fetch("refund", refund, refund.provider_refund_id, provider.refund, ours)
        if missing:
            found.append(missing)
            continue
        shown = {"status": theirs["status"], "amount_cents": theirs["amount"],
                 "payment_intent_id": theirs.get("payment_intent")}
        if theirs["amount"] != refund.amount_cents:
            found.append(_mismatch("refund", refund.id, theirs["id"], "amount_mismatch", ours, shown))
        if theirs["status"] not in REFUND_STATUSES.get(refund.status, set()):
            found.append(_mismatch("refund", refund.id, theirs["id"], "status_mismatch", ours, shown))
        if theirs.get("payment_intent") != refund.payment_intent_id:
            found.append(_mismatch("refund", refund.id, theirs["id"], "payment_mismatch", ours, shown))
    return len(refunds), found


async def _transfers(since: datetime, _provider: ProviderView) -> tuple[int, list[Mismatch]]:
    if get_settings().stripe_simulate_connect:
        raise SkipCheck("Connect is simulated (STRIPE_SIMULATE_CONNECT): the provider holds no transfers")
    payouts = await Payout.find({"created_at": {"$gte": since}, "status": {"$in": ["paid", "reversed"]}}).to_list()
    found: list[Mismatch] = []
    for payout in payouts:
        ours = {"status": payout.status, "amount_cents": payout.amount_cents,
                "destination": payout.destination_account_id, "reversed_cents": payout.reversed_cents}
        transfer, missing = await _fetch("payout", payout, payout.transfer_id, _transfer_dict, ours)
        if missing:
            found.append(missing)
            continue
        theirs = {"amount_cents": transfer["amount"], "destination": transfer.get("destination"),
                  "reversed_cents": transfer.get("amount_reversed", 0)}
        for field, issue in (("amount_cents", "amount_mismatch"), ("destination", "destination_mismatch"),
                             ("reversed_cents", "reversal_mismatch")):
            if ours[field] != theirs[field]:
                found.append(_mismatch("payout", payout.id, transfer["id"], issue, ours, theirs))
    return len(payouts), found


async def _transfer_dict(transfer_id: str) -> dict[str, Any]:
    return (await payments.retrieve_transfer(transfer_id)).to_dict()


async def _stuck_payouts(_since: datetime, _provider: ProviderView) -> tuple[int, list[Mismatch]]:
    cutoff = utcnow() - timedelta(seconds=get_settings().payout_retry_max_age_seconds)
    stuck = await Payout.find({"status": "pending", "created_at": {"$lt": cutoff}}).to_list()
    return len(stuck), [
        _mismatch("payout", p.id, None, "stuck_pending", {"amount_cents": p.amount_cents, "created_at": p.created_at})
        for p in stuck
    ]


async def _chargebacks(since: datetime, _provider: ProviderView) -> tuple[int, list[Mismatch]]:
    """Disputes still open or lost: money the provider took back, or may. Won ones are settled."""
    disputes = await Chargeback.find({"updated_at": {"$gte": since}}).to_list()
    found = []
    for dispute in disputes:
        if dispute.status in SETTLED_DISPUTES and dispute.withdrawn_cents == dispute.reinstated_cents:
            continue
        ours = {"status": dispute.status, "amount_cents": dispute.amount_cents, "deposit_id": dispute.deposit_id,
                "withdrawn_cents": dispute.withdrawn_cents, "reinstated_cents": dispute.reinstated_cents}
        issue = "dispute_on_unknown_payment" if dispute.deposit_id is None else f"chargeback_{dispute.status}"
        found.append(_mismatch("chargeback", dispute.id, dispute.id, issue, ours))
    return len(disputes), found


# -- theirs -> ours ------------------------------------------------------------------------------------
async def _provider_payments(_since: datetime, provider: ProviderView) -> tuple[int, list[Mismatch]]:
    intents = await provider.intents()
    known = {d["payment_intent_id"] async for d in Deposit.get_pymongo_collection().find(
        {"payment_intent_id": {"$in": list(intents)}}, {"payment_intent_id": 1})}
    found = []
    for pi in intents.values():
        if pi["id"] in known or pi.get("invoice") or pi.get("status") != "succeeded":
            continue  # ours, a membership invoice's, or no money moved
        found.append(_mismatch("payment", None, pi["id"], "payment_without_deposit", {},
                               {"amount_cents": pi["amount"], "metadata": pi.get("metadata") or {}}))
    return len(intents), found


async def _provider_refunds(_since: datetime, provider: ProviderView) -> tuple[int, list[Mismatch]]:
    """Refunds of our deposits' payments that no record of ours accounts for."""
    refunds = await provider.refunds()
    intent_ids = list({r.get("payment_intent") for r in refunds.values() if r.get("payment_intent")})
    ours_by_intent = set(await Deposit.get_pymongo_collection().distinct(
        "payment_intent_id", {"payment_intent_id": {"$in": intent_ids}}))
    recorded = {r["provider_refund_id"] async for r in WalletRefund.get_pymongo_collection().find(
        {"provider_refund_id": {"$in": list(refunds)}}, {"provider_refund_id": 1})}
    outside = {r["_id"] async for r in ExternalRefund.get_pymongo_collection().find(
        {"_id": {"$in": list(refunds)}}, {"_id": 1})}
    in_flight = {str(r["_id"]) async for r in WalletRefund.get_pymongo_collection().find(
        {"payment_intent_id": {"$in": intent_ids}, "status": "pending", "provider_refund_id": None}, {"_id": 1})}
    found = []
    for data in refunds.values():
        if data.get("payment_intent") not in ours_by_intent or data["id"] in recorded:
            continue
        shown = {"amount_cents": data["amount"], "payment_intent_id": data.get("payment_intent"),
                 "status": data.get("status")}
        tagged = (data.get("metadata") or {}).get("wallet_refund_id")
        if tagged:
            if tagged not in in_flight:  # made for one of ours, but not the one we recorded: a second refund
                found.append(_mismatch("refund", tagged, data["id"], "duplicate_provider_refund", {}, shown))
            continue
        issue = "refund_outside_app" if data["id"] in outside else "refund_outside_app_not_recorded"
        found.append(_mismatch("refund", None, data["id"], issue, {"recorded": data["id"] in outside}, shown))
    return len(refunds), found


async def _provider_transfers(since: datetime, _provider: ProviderView) -> tuple[int, list[Mismatch]]:
    if get_settings().stripe_simulate_connect:
        raise SkipCheck("Connect is simulated (STRIPE_SIMULATE_CONNECT): the provider holds no transfers")
    transfers = [t.to_dict() for t in await payments.list_transfers(int(since.timestamp()))]
    recorded = {p["transfer_id"] async for p in Payout.get_pymongo_collection().find(
        {"transfer_id": {"$in": [t["id"] for t in transfers]}}, {"transfer_id": 1})}
    return len(transfers), [
        _mismatch("payout", (t.get("metadata") or {}).get("payout_id"), t["id"], "transfer_not_recorded", {},
                  {"amount_cents": t["amount"], "transfer_group": t.get("transfer_group")})
        for t in transfers if t["id"] not in recorded and str(t.get("transfer_group") or "").startswith("payout:")
    ]


async def _provider_disputes(since: datetime, _provider: ProviderView) -> tuple[int, list[Mismatch]]:
    try:
        disputes = [d.to_dict() for d in await payments.list_disputes(int(since.timestamp()))]
    except PaymentProviderError as exc:
        if payments.outcome_unknown(exc):
            raise
        raise SkipCheck(f"the provider lists no disputes here: {exc.detail}") from None
    recorded = {c["_id"] async for c in Chargeback.get_pymongo_collection().find(
        {"_id": {"$in": [d["id"] for d in disputes]}}, {"_id": 1})}
    return len(disputes), [
        _mismatch("chargeback", None, d["id"], "dispute_not_recorded", {},
                  {"amount_cents": d.get("amount"), "status": d.get("status"),
                   "payment_intent": d.get("payment_intent")})
        for d in disputes if d["id"] not in recorded
    ]


Check = Callable[[datetime, ProviderView], Awaitable[tuple[int, list[Mismatch]]]]
CHECKS: dict[str, Check] = {
    "deposits": _deposits, "refunds": _refunds, "transfers": _transfers, "stuck_payouts": _stuck_payouts,
    "chargebacks": _chargebacks, "provider_payments": _provider_payments, "provider_refunds": _provider_refunds,
    "provider_transfers": _provider_transfers, "provider_disputes": _provider_disputes,
}


async def reconcile() -> ReconciliationReport:
    """Run every check and store one report."""
    report = ReconciliationReport(started_at=utcnow())
    report.created_at = report.started_at
    since = report.started_at - timedelta(days=get_settings().reconciliation_window_days)
    provider = ProviderView(since)
    for name, check in CHECKS.items():
        try:
            report.checked[name], mismatches = await check(since, provider)
        except SkipCheck as skip:
            report.skipped[name] = str(skip)
            continue
        except PaymentProviderError as exc:  # a check that could not finish is a difference too
            mismatches = [_mismatch(name, None, None, "check_failed", {}, {"error": exc.detail})]
        report.mismatch_count += len(mismatches)
        report.mismatches.extend(mismatches[:max(0, MAX_STORED_MISMATCHES - len(report.mismatches))])
    report.ok = report.mismatch_count == 0
    report.finished_at = utcnow()
    await report.insert()
    return report


async def reports(page: PageParams) -> tuple[list[ReconciliationReport], str | None]:
    return await paginate(ReconciliationReport, {}, page)
