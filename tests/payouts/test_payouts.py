"""Payouts through the public API: reserve, transfer after commit, return the funds on failure."""

import asyncio

import stripe

from app.db import db_commands
from app.errors import PaymentProviderError
from app.integrations import payments
from app.ledger import service as ledger
from app.ledger.accounts import EXTERNAL
from app.ledger.models import Journal
from app.outbox.models import OutboxTask
from app.payouts import service as payouts
from app.payouts.models import Payout
from tests.fixtures.factories import drain_jobs, settle_outbox, user_doc
from tests.payouts.conftest import PayoutDriver, earn


def provider_error(cause: stripe.StripeError) -> PaymentProviderError:
    """What payments.call() raises for a provider error."""
    try:
        raise payments.provider_failure(cause) from cause
    except PaymentProviderError as exc:
        return exc


async def test_payout_reserves_then_transfers(payee: PayoutDriver):
    resp = await payee.request(2_000)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert (body["amount_cents"], body["status"], body["transfer_id"]) == (2_000, "pending", None)
    assert await payee.balance() == {"available_cents": 3_000, "pending_cents": 2_000}
    assert (await ledger.check_invariants())["ok"]

    await drain_jobs()
    [listed] = await payee.listed()
    assert listed["id"] == body["id"] and listed["status"] == "paid"
    assert listed["transfer_id"].startswith("tr_sim_") and listed["resolved_at"]
    assert await payee.balance() == {"available_cents": 3_000, "pending_cents": 0}
    assert await Journal.find(Journal.type == "payout.paid").count() == 1
    assert (await ledger.check_invariants())["ok"]

    await drain_jobs()  # nothing left; a repeated job would be a no-op
    assert await payouts.execute_transfer(body["id"]) == "skipped"
    assert await Journal.find(Journal.type == "payout.paid").count() == 1


async def test_transfer_refused_returns_the_funds(payee: PayoutDriver, monkeypatch):
    async def refuse(*args, **kwargs):
        raise provider_error(stripe.InvalidRequestError("Insufficient funds in Stripe account.", None,
                                                        code="balance_insufficient", http_status=400))

    monkeypatch.setattr(payments, "create_transfer", refuse)
    assert (await payee.request(4_000)).status_code == 201
    assert await payee.balance() == {"available_cents": 1_000, "pending_cents": 4_000}
    await drain_jobs()
    [payout] = await payee.listed()
    # the provider's own words are logged, not shown: the payout carries our stable reason
    assert payout["status"] == "failed" and payout["failure_reason"] == "provider_rejected"
    assert await payee.balance() == {"available_cents": 5_000, "pending_cents": 0}
    assert await ledger.balance(EXTERNAL) == -5_500  # the builder's funding only: nothing left the platform
    assert (await ledger.check_invariants())["ok"]


async def test_unknown_outcome_stays_reserved_and_is_retried(payee: PayoutDriver, monkeypatch, settings):
    real_transfer = payments.create_transfer
    keys: list[str] = []

    async def time_out_once(*args, idempotency_key: str, **kwargs):
        keys.append(idempotency_key)
        if len(keys) == 1:
            raise provider_error(stripe.APIConnectionError("Read timed out."))
        return await real_transfer(*args, idempotency_key=idempotency_key, **kwargs)

    monkeypatch.setattr(payments, "create_transfer", time_out_once)
    payout_id = (await payee.request(1_500)).json()["id"]
    await drain_jobs()  # the transfer's task fails; the outbox keeps it for a retry, nothing is undone
    task = await OutboxTask.get(f"payout:{payout_id}:transfer")
    assert (task.status, task.attempts) == ("pending", 1) and "PaymentProviderError" in task.last_error
    assert (await payee.listed())[0]["status"] == "pending"
    assert await payee.balance() == {"available_cents": 3_500, "pending_cents": 1_500}

    assert await settle_outbox() == ["done"]  # after the backoff, the sweep's retry
    assert (await payee.listed())[0]["status"] == "paid"
    assert keys == [f"payout:{payout_id}"] * 2  # the retry reuses the provider idempotency key
    assert await settle_outbox() == []
    assert (await ledger.check_invariants())["ok"]


async def test_bad_input_and_wrong_role(client, actors, payee: PayoutDriver, settings):
    settings.min_payout_cents = 1_000
    for bad in ({"amount_cents": 1500.0}, {"amount_cents": "1500"}, {"amount_cents": -5}, {"amount_cents": 0},
                {"amount_cents": 1500, "currency": "usd"}, {}, {"amount_cents": {"$gt": 0}}):
        resp = await client.post("/api/payouts", json=bad, headers=payee.headers)
        assert resp.status_code == 422, (bad, resp.text)
    resp = await payee.request(999)
    assert resp.status_code == 422 and resp.json()["error"] == "payout_below_minimum"
    assert resp.json()["detail"] == {"min_payout_cents": 1_000}

    builder = await actors.signed_in("builder")
    resp = await client.post("/api/payouts", json={"amount_cents": 1_500}, headers=builder["headers"])
    assert resp.status_code == 403 and resp.json()["error"] == "wrong_role"
    assert (await client.get("/api/payouts/balance", headers=builder["headers"])).status_code == 403
    assert (await client.post("/api/payouts", json={"amount_cents": 1_500})).status_code == 401
    assert await Payout.count() == 0


async def test_needs_connected_account_and_funds(client, actors, payee: PayoutDriver):
    tester = PayoutDriver(client, await actors.signed_in("tester"))
    await earn(tester.tester["id"], 2_000)
    resp = await tester.request(1_000)
    assert resp.status_code == 409 and resp.json()["error"] == "payout_account_missing"

    resp = await payee.request(5_001)
    assert resp.status_code == 409 and resp.json()["error"] == "insufficient_funds"
    assert await Payout.count() == 0 and await Journal.find(Journal.type == "payout.reserve").count() == 0
    assert await drain_jobs() == []


async def test_onboarding_incomplete_blocks_payouts(payee: PayoutDriver):
    user = await user_doc(payee.tester["id"])
    await user.set({"payouts_enabled": False})
    resp = await payee.request(1_000)
    assert resp.status_code == 409 and resp.json()["error"] == "payout_account_missing"


async def test_ten_parallel_payouts_on_funds_for_three(client, actors, settings):
    settings.stripe_simulate_connect = True
    tester = PayoutDriver(client, await actors.signed_in("tester"))
    await tester.onboard()
    await earn(tester.tester["id"], 3 * 1_000 + 500)

    results = await asyncio.gather(*[tester.request(1_000) for _ in range(10)])
    codes = sorted(r.status_code for r in results)
    assert codes == [201] * 3 + [409] * 7, [r.text for r in results]
    assert all(r.json()["error"] == "insufficient_funds" for r in results if r.status_code == 409)
    assert await tester.balance() == {"available_cents": 500, "pending_cents": 3_000}
    await drain_jobs()
    assert await tester.balance() == {"available_cents": 500, "pending_cents": 0}
    assert [p["status"] for p in await tester.listed()] == ["paid"] * 3
    assert (await ledger.check_invariants())["ok"]


async def test_idempotency_key_replays_the_first_payout(payee: PayoutDriver):
    first = await payee.request(1_200, key="withdraw-1")
    again = await payee.request(1_200, key="withdraw-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"
    other = await payee.request(1_300, key="withdraw-1")
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    assert await Payout.count() == 1
    assert await payee.balance() == {"available_cents": 3_800, "pending_cents": 1_200}


async def test_pagination_and_ownership(client, actors, payee: PayoutDriver):
    for _ in range(3):
        assert (await payee.request(1_000)).status_code == 201
    page = (await client.get("/api/payouts?limit=2", headers=payee.headers)).json()
    assert len(page["items"]) == 2 and page["next"]
    rest = (await client.get(f"/api/payouts?limit=2&cursor={page['next']}", headers=payee.headers)).json()
    assert len(rest["items"]) == 1 and rest["next"] is None
    other = await actors.signed_in("tester")
    assert (await client.get("/api/payouts", headers=other["headers"])).json()["items"] == []
    assert (await client.get("/api/payouts?limit=101", headers=payee.headers)).status_code == 422


async def test_invariant_catches_pending_without_payout(payee: PayoutDriver):
    await payee.request(1_000)
    await Payout.get_pymongo_collection().update_many({}, {"$set": {"status": "failed"}})
    report = await ledger.check_invariants()
    assert {v["check"] for v in report["violations"]} == {"payout_pending_equals_pending_payouts"}


async def test_db_commands_for_one_payout_request(payee: PayoutDriver):
    commands: list[str] = []
    token = db_commands.set(commands)
    try:
        assert (await payee.request(1_000, key="count-me")).status_code == 201
    finally:
        db_commands.reset(token)
    print(f"\nDB commands for POST /api/payouts: {len(commands)} {commands}")
    # budget: user; key claim (find, insert, commit); reserve (find, payout, journal, 2 balances,
    # outbox task, recovery point, commit); key finish (update, commit)
    assert len(commands) <= 14, commands
