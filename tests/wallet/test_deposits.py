"""Deposits: a pending PaymentIntent first, wallet money only after the provider's signed webhook."""

import asyncio

import stripe
from beanie import PydanticObjectId

from app.db import db_commands
from app.integrations import payments
from app.ledger import service as ledger
from app.payments.models import InboxEvent
from app.wallet import deposits
from app.wallet.models import Deposit, DepositQuota, WalletAllocation
from tests.fixtures.factories import drain_jobs, post_stripe_event, stripe_event, user_doc
from tests.wallet.conftest import intent, pay


async def test_deposit_is_credited_only_by_the_webhook(wallet, settings):
    settings.refund_window_days = 90
    resp = await wallet.deposit(5_000)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["status"] == "pending" and body["amount_cents"] == 5_000
    assert body["client_secret"].startswith(body["payment_intent_id"]) and body["deposit_id"]
    provider = await intent(body["payment_intent_id"])
    assert provider["metadata"] == {"deposit_id": body["deposit_id"], "builder_id": wallet.builder["id"]}
    assert provider["amount"] == 5_000 and provider["customer"] == (await user_doc(wallet.builder["id"])).stripe_customer_id
    assert (await wallet.summary())["available_cents"] == 0  # paying alone credits nothing

    await pay(body["payment_intent_id"])
    assert (await wallet.summary())["available_cents"] == 0
    await wallet.event("payment_intent.succeeded", body["payment_intent_id"])

    assert await wallet.summary() == {"available_cents": 5_000, "held_cents": 0, "refund_pending_cents": 0,
                                      "owed_cents": 0, "deposited_today_cents": 5_000,
                                      "daily_limit_cents": 100_000}
    deposit = await Deposit.get(PydanticObjectId(body["deposit_id"]))
    assert deposit.status == "succeeded" and deposit.succeeded_at is not None
    [lot] = await WalletAllocation.find_all().to_list()
    assert (lot.deposit_id, lot.amount_cents, lot.remaining_cents) == (deposit.id, 5_000, 5_000)
    assert lot.payment_intent_id == body["payment_intent_id"]
    assert 89 < (lot.refundable_until_at - lot.created_at).total_seconds() / 86_400 <= 90
    listed = await wallet.client.get("/api/wallet/deposits", headers=wallet.headers)
    assert [d["status"] for d in listed.json()["items"]] == ["succeeded"]
    one = await wallet.client.get(f"/api/wallet/deposits/{body['deposit_id']}", headers=wallet.headers)
    assert one.status_code == 200 and one.json()["status"] == "succeeded"
    assert (await ledger.check_invariants())["ok"]


async def test_customer_is_created_once_and_reused(wallet):
    first = (await wallet.deposit(1_000)).json()
    second = (await wallet.deposit(1_000)).json()
    customers = {(await intent(b["payment_intent_id"]))["customer"] for b in (first, second)}
    assert customers == {(await user_doc(wallet.builder["id"])).stripe_customer_id}


async def test_declined_and_canceled_deposits_release_the_daily_quota(wallet):
    declined = await wallet.declined(40_000)
    await wallet.event("payment_intent.payment_failed", declined["payment_intent_id"])
    canceled = (await wallet.deposit(30_000)).json()
    await payments.client().v1.payment_intents.cancel_async(canceled["payment_intent_id"])
    await wallet.event("payment_intent.canceled", canceled["payment_intent_id"])

    statuses = {d.amount_cents: (d.status, d.failure_reason) for d in await Deposit.find_all().to_list()}
    assert statuses[40_000][0] == "failed" and statuses[40_000][1]
    assert statuses[30_000][0] == "canceled"
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["deposited_today_cents"]) == (0, 0)
    assert await WalletAllocation.count() == 0
    assert (await ledger.check_invariants())["ok"]


async def test_daily_limit_counts_pending_deposits(wallet, settings):
    settings.daily_deposit_limit_cents = 100_000
    pending = (await wallet.deposit(60_000)).json()
    await wallet.funded(30_000)
    refused = await wallet.deposit(10_001)
    assert refused.status_code == 409 and refused.json()["error"] == "daily_limit_exceeded"
    assert refused.json()["detail"] == {"daily_limit_cents": 100_000, "deposited_today_cents": 90_000,
                                        "requested_cents": 10_001}
    assert (await wallet.deposit(10_000)).status_code == 201
    assert (await wallet.deposit(500)).status_code == 409

    await payments.client().v1.payment_intents.cancel_async(pending["payment_intent_id"])
    await wallet.event("payment_intent.canceled", pending["payment_intent_id"])
    assert (await wallet.summary())["deposited_today_cents"] == 40_000
    assert (await wallet.deposit(60_000)).status_code == 201
    assert await Deposit.count() == 4


async def test_concurrent_deposits_cannot_pass_the_limit_together(wallet, settings):
    settings.daily_deposit_limit_cents = 100_000
    results = await asyncio.gather(*[wallet.deposit(30_000) for _ in range(6)])
    codes = sorted(r.status_code for r in results)
    assert codes == [201, 201, 201, 409, 409, 409]
    assert await Deposit.find(Deposit.status == "pending").count() == 3
    [quota] = await DepositQuota.find_all().to_list()
    assert quota.reserved_cents == 90_000


async def test_provider_refusal_closes_the_deposit_and_frees_its_quota(wallet, monkeypatch):
    async def refuse(*_, **__):
        raise payments.provider_failure(stripe.CardError("card processing unavailable", None, "card_declined"))

    monkeypatch.setattr(payments, "create_payment_intent", refuse)
    failed = await wallet.deposit(20_000, key="dep-1")
    assert failed.status_code == 502 and failed.json()["error"] == "payment_provider_error"
    assert failed.json()["detail"]["reason"] == "card_declined"
    assert "card processing unavailable" not in failed.text  # the provider's words stay in our logs
    [deposit] = await Deposit.find_all().to_list()
    assert deposit.status == "failed" and "card_declined" in deposit.failure_reason
    assert (await wallet.summary())["deposited_today_cents"] == 0

    monkeypatch.undo()
    again = await wallet.deposit(20_000, key="dep-1")  # the same request: the same (refused) deposit
    assert again.status_code == 502 and await Deposit.count() == 1
    retried = await wallet.deposit(20_000, key="dep-2")  # a new request
    assert retried.status_code == 201 and retried.json()["deposit_id"] != str(deposit.id)
    assert (await wallet.summary())["deposited_today_cents"] == 20_000


async def test_paid_after_a_decline_is_still_credited(wallet, monkeypatch):
    """Stripe lets a customer retry a declined PaymentIntent; the money counts when it arrives."""
    declined = await wallet.declined(5_000)
    await wallet.event("payment_intent.payment_failed", declined["payment_intent_id"])
    assert (await wallet.summary())["deposited_today_cents"] == 0

    real = payments.retrieve_payment_intent

    async def now_succeeded(intent_id):
        obj = await real(intent_id)
        obj["status"] = "succeeded"
        return obj

    monkeypatch.setattr(payments, "retrieve_payment_intent", now_succeeded)
    await wallet.event("payment_intent.succeeded", declined["payment_intent_id"])
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["deposited_today_cents"]) == (5_000, 5_000)
    assert (await Deposit.find_one()).status == "succeeded"
    assert (await ledger.check_invariants())["ok"]


async def test_one_deposit_webhook_costs_a_bounded_number_of_db_commands(wallet):
    body = (await wallet.deposit(5_000)).json()
    await pay(body["payment_intent_id"])
    event = InboxEvent(event_id="evt_count", type="payment_intent.succeeded",
                       payload={"data": {"object": await intent(body["payment_intent_id"])}})
    commands: list[str] = []
    token = db_commands.set(commands)
    try:
        await deposits.on_payment_intent(event.payload)
    finally:
        db_commands.reset(token)
    assert (await wallet.summary())["available_cents"] == 5_000
    print(f"deposit webhook handler: {len(commands)} db commands: {commands}")
    assert len(commands) <= 8, commands  # find, flip, what is owed, journal, 2 balances, lot, commit


async def test_unpaid_intent_event_claiming_success_credits_nothing(wallet):
    body = (await wallet.deposit(5_000)).json()
    forged = {**await intent(body["payment_intent_id"]), "status": "succeeded"}
    resp = await post_stripe_event(wallet.client, stripe_event("payment_intent.succeeded", forged))
    assert resp.status_code == 200
    await drain_jobs()
    assert (await wallet.summary())["available_cents"] == 0
    assert (await Deposit.find_one()).status == "pending"
    assert await WalletAllocation.count() == 0
