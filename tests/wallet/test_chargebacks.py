"""Money the provider moves without us: a lost chargeback after the builder's money was already
paid out to a tester, a won one, and refunds made in the Stripe dashboard. The ledger records each
once, the builder's debt is a receivable that blocks refunds and is settled by the next deposits,
and reconciliation reports every one of them."""

import uuid

import pytest
from beanie import PydanticObjectId

from app.config import get_settings
from app.errors import BalanceOwed
from app.escrow import service as escrow
from app.integrations import payments
from app.kit.money import fee_for
from app.ledger import service as ledger
from app.ledger.accounts import EXTERNAL, builder_receivable
from app.ledger.models import Journal
from app.reconciliation import service as reconciliation
from app.wallet.models import Chargeback, ExternalRefund, WalletAllocation
from tests.fixtures.factories import clear_localstripe, drain_jobs, post_stripe_event, settle_outbox, stripe_event
from tests.payouts.conftest import PayoutDriver
from tests.wallet.conftest import pay


def dispute(intent_id: str, cents: int, status: str, *movements: tuple[str, int], dispute_id: str = "dp_1") -> dict:
    """A dispute as the provider sends it: its balance transactions are the money it moved."""
    return {"id": dispute_id, "object": "dispute", "amount": cents, "currency": "usd", "payment_intent": intent_id,
            "charge": f"ch_of_{intent_id}", "status": status, "reason": "fraudulent",
            "balance_transactions": [{"id": txn, "object": "balance_transaction", "amount": amount, "fee": 1500}
                                     for txn, amount in movements]}


async def deliver(client, event_type: str, obj: dict, event_id: str | None = None) -> None:
    assert (await post_stripe_event(client, stripe_event(event_type, obj, event_id))).status_code == 200
    await drain_jobs()


async def spend_on_a_payout(client, actors, builder_id: str, payout_cents: int) -> PayoutDriver:
    """The builder's money goes to a tester through escrow, and the tester withdraws it (simulated
    Connect: the caller's `settings` fixture restores the flag)."""
    get_settings().stripe_simulate_connect = True
    tester = PayoutDriver(client, await actors.signed_in("tester"))
    await tester.onboard()
    hold = await escrow.hold_now(PydanticObjectId(builder_id), PydanticObjectId(tester.tester["id"]), payout_cents,
                                 key=f"assignment:{uuid.uuid4().hex}")
    await escrow.release_now(hold.id)
    assert (await tester.request(payout_cents)).status_code == 201
    await drain_jobs()
    assert (await tester.listed())[0]["status"] == "paid"
    return tester


async def test_a_lost_chargeback_after_a_payout_becomes_a_debt_that_blocks_refunds_until_settled(
        client, actors, wallet, settings):
    await clear_localstripe()
    settings.platform_fee_bps = 1000
    deposit = await wallet.funded(5_000)
    await spend_on_a_payout(client, actors, wallet.builder["id"], 4_000)
    assert (await wallet.summary())["available_cents"] == 5_000 - 4_000 - fee_for(4_000, 1000)  # 600 left
    external_before = await ledger.balance(EXTERNAL)

    pi = deposit["payment_intent_id"]
    await deliver(client, "charge.dispute.created", dispute(pi, 5_000, "needs_response", ("txn_dp_1", -5_000)))
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["owed_cents"]) == (0, 4_400)
    assert await ledger.balance(EXTERNAL) == external_before + 5_000  # the money left the platform
    [journal] = await Journal.find(Journal.type == "wallet.chargeback").to_list()
    assert {p.account: p.amount for p in journal.postings} == {
        EXTERNAL: 5_000, f"builder:{wallet.builder['id']}:available": -600,
        builder_receivable(wallet.builder["id"]): -4_400}
    assert (await WalletAllocation.find_one()).remaining_cents == 0  # charged back: nothing left to refund

    # Closed as lost, delivered twice: nothing moves again.
    lost = dispute(pi, 5_000, "lost", ("txn_dp_1", -5_000))
    await deliver(client, "charge.dispute.closed", lost, "evt_dp_closed")
    await deliver(client, "charge.dispute.closed", lost, "evt_dp_closed")
    assert (await wallet.summary())["owed_cents"] == 4_400
    assert await Journal.find(Journal.type == "wallet.chargeback").count() == 1
    assert (await Chargeback.get("dp_1")).status == "lost"

    refused = await wallet.refund(100)
    assert refused.status_code == 409 and refused.json()["error"] == "balance_owed"
    assert refused.json()["detail"] == {"owed_cents": 4_400}

    # The next deposits settle the debt before any of it is spendable (or refundable).
    await wallet.funded(3_000)
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["owed_cents"]) == (0, 1_400)
    settled = await wallet.funded(2_000)
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["owed_cents"]) == (600, 0)
    lot = await WalletAllocation.find_one(WalletAllocation.deposit_id == PydanticObjectId(settled["deposit_id"]))
    assert (lot.amount_cents, lot.remaining_cents) == (2_000, 600)
    assert (await wallet.refund(600)).status_code == 201
    assert (await ledger.check_invariants())["ok"]

    report = await reconciliation.reconcile()
    [chargeback] = [m for m in report.mismatches if m["kind"] == "chargeback"]
    assert chargeback["issue"] == "chargeback_lost" and chargeback["ours"]["withdrawn_cents"] == 5_000
    assert report.ok is False


async def test_a_won_chargeback_gives_the_money_back_once(client, wallet):
    deposit = await wallet.funded(2_000)
    pi = deposit["payment_intent_id"]
    await deliver(client, "charge.dispute.funds_withdrawn", dispute(pi, 2_000, "under_review", ("txn_w", -2_000)))
    assert (await wallet.summary())["available_cents"] == 0
    won = dispute(pi, 2_000, "won", ("txn_w", -2_000), ("txn_r", 2_000))
    await deliver(client, "charge.dispute.funds_reinstated", won)
    await deliver(client, "charge.dispute.closed", won)
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["owed_cents"]) == (2_000, 0)
    record = await Chargeback.get("dp_1")
    assert (record.status, record.withdrawn_cents, record.reinstated_cents) == ("won", 2_000, 2_000)
    assert await Journal.find(Journal.type == "wallet.chargeback_reinstated").count() == 1


async def test_a_dispute_event_before_the_deposit_credit_waits_for_it(client, wallet):
    """Events arrive out of order: the dispute is retried until the deposit it takes money from exists."""
    body = (await wallet.deposit(1_000)).json()
    await pay(body["payment_intent_id"])
    await deliver(client, "charge.dispute.created",
                  dispute(body["payment_intent_id"], 1_000, "needs_response", ("txn_early", -1_000)))
    assert await Journal.find(Journal.type == "wallet.chargeback").count() == 0
    await wallet.event("payment_intent.succeeded", body["payment_intent_id"])
    assert "done" in await settle_outbox()
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["owed_cents"]) == (0, 0)
    assert await Journal.find(Journal.type == "wallet.chargeback").count() == 1


async def test_refunds_made_in_the_dashboard_are_taken_back_once_and_reported(client, wallet):
    await clear_localstripe()
    deposit = await wallet.funded(3_000)
    pi = deposit["payment_intent_id"]
    dashboard = await payments.client().v1.refunds.create_async(params={"payment_intent": pi, "amount": 1_000})
    charge = {"id": f"ch_{uuid.uuid4().hex[:12]}", "object": "charge", "payment_intent": pi, "refunded": False}

    await deliver(client, "charge.refunded", charge)
    await deliver(client, "charge.refunded", charge)  # a redelivery
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["owed_cents"]) == (2_000, 0)
    assert [r.id for r in await ExternalRefund.find_all().to_list()] == [dashboard.id]
    assert (await WalletAllocation.find_one()).remaining_cents == 2_000
    assert await Journal.find(Journal.type == "wallet.external_refund").count() == 1

    # Our own refund of the same payment is not mistaken for an outside one.
    assert (await wallet.refund(500)).status_code == 201
    await deliver(client, "charge.refunded", charge, "evt_after_ours")
    assert (await wallet.summary())["available_cents"] == 1_500
    assert await ExternalRefund.count() == 1

    # One more dashboard refund whose webhook never arrives: reconciliation finds it anyway.
    unseen = await payments.client().v1.refunds.create_async(params={"payment_intent": pi, "amount": 300})
    report = await reconciliation.reconcile()
    outside = {(m["provider_id"], m["issue"]) for m in report.mismatches if m["kind"] == "refund"}
    assert outside == {(dashboard.id, "refund_outside_app"), (unseen.id, "refund_outside_app_not_recorded")}
    assert (await ledger.check_invariants())["ok"]


async def test_while_a_builder_owes_nothing_can_be_held_and_money_coming_back_settles_the_debt(client, wallet,
                                                                                             settings):
    """The chargeback lands while the builder's money sits in escrow: a new hold is refused, and the
    voided hold's money pays the debt before any of it is spendable again."""
    settings.platform_fee_bps = 0
    deposit = await wallet.funded(1_000)
    builder_id = PydanticObjectId(wallet.builder["id"])
    hold = await escrow.hold_now(builder_id, PydanticObjectId(), 1_000, key=f"assignment:{uuid.uuid4().hex}")
    await deliver(client, "charge.dispute.created",
                  dispute(deposit["payment_intent_id"], 1_000, "needs_response", ("txn_held", -1_000)))
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["held_cents"], summary["owed_cents"]) == (0, 1_000, 1_000)

    await wallet.funded(600)  # settles 600 of the debt
    with pytest.raises(BalanceOwed) as refused:
        await escrow.hold_now(builder_id, PydanticObjectId(), 100, key=f"assignment:{uuid.uuid4().hex}")
    assert refused.value.detail == {"owed_cents": 400}

    await escrow.void_now(hold.id)  # the job was cancelled: the held money comes back
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["held_cents"], summary["owed_cents"]) == (600, 0, 0)
    assert (await ledger.check_invariants())["ok"]
