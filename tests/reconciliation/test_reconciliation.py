"""Reconciliation against localstripe (deposits, refunds) and the Stripe stub (transfers), with injected
mismatches: every one is reported, nothing is corrected."""

import asyncio
import os
import sys
import uuid
from datetime import timedelta

import pytest
from beanie import PydanticObjectId

from app.config import get_settings
from app.integrations import payments
from app.kit.timeutil import utcnow
from app.payouts.models import Payout
from app.reconciliation import service as reconciliation
from app.reconciliation.models import ReconciliationReport
from app.reconciliation.tasks import reconcile as reconcile_task
from app.wallet.models import Deposit, WalletRefund
from tests.fixtures.factories import clear_localstripe, new_id
from tests.fixtures.stripe_stub import StripeStub, stripe_stub, transfer_json  # noqa: F401


@pytest.fixture(autouse=True)
async def empty_provider():
    """Reconciliation also lists the provider's own objects: start each test with an empty localstripe."""
    await clear_localstripe()


async def paid_intent(cents: int) -> str:
    """A PaymentIntent paid with a test card, as Stripe.js would leave it."""
    intent = await payments.create_payment_intent(cents, None, {"test": "reconcile"}, uuid.uuid4().hex)
    await payments.client().v1.payment_intents.update_async(intent.id, params={"payment_method": "pm_card_visa"})
    await payments.client().v1.payment_intents.confirm_async(intent.id)
    return intent.id


async def deposit(builder_id: PydanticObjectId, cents: int, intent_id: str, status: str = "succeeded",
                  created_at=None) -> Deposit:
    doc = Deposit(builder_id=builder_id, amount_cents=cents, day=utcnow().date().isoformat(), status=status,
                  payment_intent_id=intent_id, created_at=created_at or utcnow())
    return await doc.insert()


async def refund(d: Deposit, cents: int, provider_refund_id: str | None, status: str = "succeeded") -> WalletRefund:
    doc = WalletRefund(builder_id=d.builder_id, request_id=uuid.uuid4().hex, allocation_id=new_id(), deposit_id=d.id,
                       payment_intent_id=d.payment_intent_id, amount_cents=cents, status=status,
                       provider_refund_id=provider_refund_id)
    return await doc.insert()


def issues(report: ReconciliationReport) -> set[tuple[str, str, str]]:
    return {(m["kind"], m["id"], m["issue"]) for m in report.mismatches}


async def test_reports_every_mismatch_and_corrects_nothing(settings):
    settings.stripe_simulate_connect = True
    builder = new_id()
    good = await deposit(builder, 1_000, await paid_intent(1_000))
    wrong_amount = await deposit(builder, 2_000, await paid_intent(1_500))
    missed_webhook = await deposit(builder, 700, await paid_intent(700), status="pending")
    unknown = await deposit(builder, 900, "pi_does_not_exist")
    await deposit(builder, 5_000, "pi_old", created_at=utcnow() - timedelta(days=30))  # outside the window

    provider_refund = await payments.create_refund(good.payment_intent_id, 400, {}, uuid.uuid4().hex)
    ok_refund = await refund(good, 400, provider_refund.id)
    short_refund = await refund(good, 300, (await payments.create_refund(
        good.payment_intent_id, 250, {}, uuid.uuid4().hex)).id)
    lost_refund = await refund(good, 100, None)
    stuck = await Payout(tester_id=new_id(), amount_cents=1_000, destination_account_id="acct_sim_x",
                         created_at=utcnow() - timedelta(days=2)).insert()

    report = await reconciliation.reconcile()
    assert issues(report) == {
        ("deposit", str(wrong_amount.id), "amount_mismatch"),
        ("deposit", str(missed_webhook.id), "status_mismatch"),
        ("deposit", str(unknown.id), "missing_at_provider"),
        ("refund", str(short_refund.id), "amount_mismatch"),
        ("refund", str(lost_refund.id), "missing_provider_id"),
        ("payout", str(stuck.id), "stuck_pending"),
    }
    [amount] = [m for m in report.mismatches if m["id"] == str(wrong_amount.id)]
    assert amount["ours"]["amount_cents"] == 2_000 and amount["provider"]["amount_cents"] == 1_500
    assert {k: report.checked[k] for k in ("deposits", "refunds", "stuck_payouts")} == {
        "deposits": 4, "refunds": 3, "stuck_payouts": 1}
    assert report.checked["provider_payments"] == 3  # the PaymentIntents created above, all ours
    assert "simulated" in report.skipped["transfers"]
    assert "disputes" in report.skipped["provider_disputes"]  # localstripe has no dispute API
    assert report.ok is False and report.finished_at is not None
    assert str(ok_refund.id) not in {m["id"] for m in report.mismatches}

    # Nothing was corrected.
    assert (await Deposit.get(missed_webhook.id)).status == "pending"
    assert (await WalletRefund.get(short_refund.id)).amount_cents == 300
    assert (await Payout.get(stuck.id)).status == "pending"
    assert await ReconciliationReport.count() == 1


async def test_clean_books_reconcile_ok_through_the_task(settings):
    settings.stripe_simulate_connect = True
    await deposit(new_id(), 1_200, await paid_intent(1_200))
    outcome = await reconcile_task()
    assert outcome["ok"] is True and outcome["mismatches"] == 0
    assert outcome["skipped"] == ["provider_disputes", "provider_transfers", "transfers"]
    stored = await ReconciliationReport.get(PydanticObjectId(outcome["report_id"]))
    assert stored.checked["deposits"] == 1


async def test_transfers_are_compared_when_connect_is_real(stripe_stub: StripeStub):  # noqa: F811
    tester = new_id()

    async def paid(transfer_id: str, cents: int, destination: str = "acct_1QbC3y5GcoHR9Zl2") -> Payout:
        return await Payout(tester_id=tester, amount_cents=cents, destination_account_id=destination, status="paid",
                            transfer_id=transfer_id, resolved_at=utcnow()).insert()

    matching = await paid("tr_match", 1_000)
    short = await paid("tr_short", 1_000)
    vanished = await paid("tr_vanished", 1_000)
    stripe_stub.on("GET", "/v1/transfers/tr_match", transfer_json("tr_match", 1_000, "acct_1QbC3y5GcoHR9Zl2", {}))
    stripe_stub.on("GET", "/v1/transfers/tr_short", transfer_json("tr_short", 900, "acct_1QbC3y5GcoHR9Zl2", {}, 100))

    report = await reconciliation.reconcile()
    transfer_issues = {(i, issue) for kind, i, issue in issues(report) if kind == "payout"}
    assert transfer_issues == {(str(short.id), "amount_mismatch"), (str(short.id), "reversal_mismatch"),
                               (str(vanished.id), "missing_at_provider")}
    assert str(matching.id) not in {m["id"] for m in report.mismatches}
    assert report.checked["transfers"] == 3 and "transfers" not in report.skipped


async def test_cli_exits_nonzero_on_a_mismatch():
    await deposit(new_id(), 800, "pi_not_at_the_provider")
    env = {**os.environ, "MONGO_DB": get_settings().mongo_db, "STRIPE_SIMULATE_CONNECT": "true"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "app.cli", "reconcile", env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = (await proc.communicate())[0].decode()
    assert proc.returncode == 1, out
    assert "missing_at_provider" in out and "skipped" in out and "ok=False" in out
