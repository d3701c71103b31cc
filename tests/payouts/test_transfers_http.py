"""Payout transfers through the real Stripe SDK, against a local HTTP stub (localstripe has no Connect)."""

import pytest

from app.ledger import service as ledger
from app.outbox.models import OutboxTask
from app.payouts.models import Payout
from tests.fixtures.factories import drain_jobs, post_stripe_event, stripe_event
from tests.fixtures.stripe_stub import StripeStub, account_json, account_link_json, stripe_stub, transfer_json  # noqa: F401
from tests.payouts.conftest import PayoutDriver, earn

ACCOUNT_ID = "acct_1QbC3y5GcoHR9Zl2"
TRANSFER_ID = "tr_1QbC4z6HdpIS0Am3"


@pytest.fixture
async def connected(client, actors, stripe_stub: StripeStub) -> PayoutDriver:  # noqa: F811
    """A tester whose Express account finished onboarding, holding 5,000 cents of earnings."""
    driver = PayoutDriver(client, await actors.signed_in("tester"))
    tester = driver.tester
    stripe_stub.on("POST", "/v1/accounts", account_json(ACCOUNT_ID, tester["email"], tester["id"],
                                                        payouts_enabled=True))
    stripe_stub.on("POST", "/v1/account_links", account_link_json(ACCOUNT_ID))
    await driver.onboard()
    await earn(tester["id"], 5_000)
    return driver


def echo_transfer(amount_reversed: int = 0):
    def answer(request):
        metadata = {k[len("metadata["):-1]: v for k, v in request.form.items() if k.startswith("metadata[")}
        return transfer_json(TRANSFER_ID, int(request.form["amount"]), request.form["destination"], metadata,
                             amount_reversed)

    return answer


async def test_transfer_request_and_success(connected: PayoutDriver, stripe_stub: StripeStub):  # noqa: F811
    stripe_stub.on("POST", "/v1/transfers", echo_transfer())
    payout = (await connected.request(2_000)).json()
    assert stripe_stub.sent("POST", "/v1/transfers") == []  # nothing leaves before the commit and the job
    await drain_jobs()

    [sent] = stripe_stub.sent("POST", "/v1/transfers")
    assert sent.form == {"amount": "2000", "currency": "usd", "destination": ACCOUNT_ID,
                         "metadata[payout_id]": payout["id"], "metadata[tester_id]": connected.tester["id"],
                         "transfer_group": f"payout:{payout['id']}"}
    assert sent.headers["Idempotency-Key"] == f"payout:{payout['id']}"
    [paid] = await connected.listed()
    assert (paid["status"], paid["transfer_id"]) == ("paid", TRANSFER_ID)
    assert await connected.balance() == {"available_cents": 3_000, "pending_cents": 0}
    assert (await ledger.check_invariants())["ok"]


async def test_transfer_refused_by_stripe_returns_the_funds(connected: PayoutDriver, stripe_stub: StripeStub):  # noqa: F811
    stripe_stub.fail("POST", "/v1/transfers", 400, "balance_insufficient",
                     "You have insufficient available funds in your Stripe account.")
    await connected.request(2_000)
    await drain_jobs()
    [failed] = await connected.listed()
    assert failed["status"] == "failed" and failed["failure_reason"] == "provider_rejected"
    assert await connected.balance() == {"available_cents": 5_000, "pending_cents": 0}
    assert len(stripe_stub.sent("POST", "/v1/transfers")) == 1
    assert (await ledger.check_invariants())["ok"]


@pytest.mark.parametrize(("status", "code"), [(500, "api_error"), (409, "idempotency_key_in_use"),
                                            (429, "rate_limit")])
async def test_unknown_outcome_keeps_the_reservation(connected: PayoutDriver, stripe_stub: StripeStub,  # noqa: F811
                                                     status: int, code: str):
    """The transfer may have happened: never undo, let the outbox retry with the same idempotency key."""
    stripe_stub.fail("POST", "/v1/transfers", status, code, "Try again later.")
    payout_id = (await connected.request(2_000)).json()["id"]
    await drain_jobs()
    task = await OutboxTask.get(f"payout:{payout_id}:transfer")
    assert (task.status, task.attempts) == ("pending", 1) and "Try again later" in task.last_error
    assert (await connected.listed())[0]["status"] == "pending"
    assert await connected.balance() == {"available_cents": 3_000, "pending_cents": 2_000}
    assert (await ledger.check_invariants())["ok"]


async def test_transfer_reversed_webhook_returns_the_reversed_part(client, connected: PayoutDriver,
                                                                   stripe_stub: StripeStub):  # noqa: F811
    stripe_stub.on("POST", "/v1/transfers", echo_transfer())
    payout_id = (await connected.request(2_000)).json()["id"]
    await drain_jobs()

    async def reversed_by(cents: int, event_id: str) -> None:
        current = transfer_json(TRANSFER_ID, 2_000, ACCOUNT_ID, {"payout_id": payout_id}, cents)
        stripe_stub.on("GET", f"/v1/transfers/{TRANSFER_ID}", current)
        stale = transfer_json(TRANSFER_ID, 2_000, ACCOUNT_ID, {"payout_id": payout_id})  # the handler re-reads
        assert (await post_stripe_event(client, stripe_event("transfer.reversed", stale, event_id))).status_code == 200
        await drain_jobs()

    await reversed_by(500, "evt_rev_1")
    assert (await connected.listed())[0]["status"] == "paid"
    assert await connected.balance() == {"available_cents": 3_500, "pending_cents": 0}
    await reversed_by(500, "evt_rev_2")  # another event, same total: nothing more comes back
    assert await connected.balance() == {"available_cents": 3_500, "pending_cents": 0}

    await reversed_by(2_000, "evt_rev_3")
    payout = await Payout.find_one()
    assert (payout.status, payout.reversed_cents) == ("reversed", 2_000)
    assert await connected.balance() == {"available_cents": 5_000, "pending_cents": 0}
    assert (await ledger.check_invariants())["ok"]


@pytest.mark.parametrize(("how", "reversed_cents", "final_status"), [
    ("hint_not_run_yet", 500, "paid"),           # the transfer task is still waiting for a worker
    ("crashed_after_provider_call", 2_000, "reversed"),  # it transferred, then died before recording it
])
async def test_a_reversal_before_the_payout_records_its_transfer_is_applied_when_it_lands(
        client, connected: PayoutDriver, stripe_stub: StripeStub, how: str,  # noqa: F811
        reversed_cents: int, final_status: str):
    from app import faults
    from app.kit.queue import HIGH, get_queue
    from tests.fixtures.factories import settle_outbox

    stripe_stub.on("POST", "/v1/transfers", echo_transfer())
    payout_id = (await connected.request(2_000)).json()["id"]
    if how == "hint_not_run_yet":
        get_queue(HIGH).empty()  # no worker has taken the transfer yet
    else:
        faults.inject("payouts.transfer.after_provider_call", "raise")
        await drain_jobs()
        assert len(stripe_stub.sent("POST", "/v1/transfers")) == 1
        made = transfer_json(TRANSFER_ID, 2_000, ACCOUNT_ID, {"payout_id": payout_id})
        stripe_stub.on("GET", "/v1/transfers", {"object": "list", "data": [made], "has_more": False,
                                                "url": "/v1/transfers"})  # the retry looks it up by its group
    pending = await Payout.find_one()
    assert (pending.status, pending.transfer_id) == ("pending", None)

    async def deliver_reversal(event_id: str) -> None:
        stripe_stub.on("GET", f"/v1/transfers/{TRANSFER_ID}",
                       transfer_json(TRANSFER_ID, 2_000, ACCOUNT_ID, {"payout_id": payout_id}, reversed_cents))
        stale = transfer_json(TRANSFER_ID, 2_000, ACCOUNT_ID, {"payout_id": payout_id})
        assert (await post_stripe_event(client, stripe_event("transfer.reversed", stale, event_id))).status_code == 200
        await drain_jobs()

    await deliver_reversal("evt_early_rev")
    kept = await Payout.find_one()
    assert (kept.status, kept.early_reversed_cents) == ("pending", reversed_cents)
    assert await connected.balance() == {"available_cents": 3_000, "pending_cents": 2_000}  # nothing back yet
    assert (await ledger.check_invariants())["ok"]

    assert "done" in await settle_outbox()  # the transfer task runs (again) and lands
    payout = await Payout.find_one()
    assert (payout.status, payout.transfer_id, payout.reversed_cents) == (final_status, TRANSFER_ID, reversed_cents)
    assert await connected.balance() == {"available_cents": 3_000 + reversed_cents, "pending_cents": 0}
    assert [r.form["amount"] for r in stripe_stub.sent("POST", "/v1/transfers")] == ["2000"]  # made once

    # The provider redelivers, and another event reports the same total: nothing comes back twice.
    await deliver_reversal("evt_early_rev")
    await deliver_reversal("evt_late_rev")
    assert await connected.balance() == {"available_cents": 3_000 + reversed_cents, "pending_cents": 0}
    assert (await Payout.find_one()).reversed_cents == reversed_cents
    report = await ledger.check_invariants()
    assert report["ok"], report["violations"]
