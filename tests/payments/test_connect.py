"""Connect onboarding: simulated in the embedded default, and the real SDK path at the HTTP boundary."""

import asyncio

from app.payments.models import InboxEvent
from tests.fixtures.factories import drain_jobs, post_stripe_event, stripe_event, user_doc
from tests.fixtures.stripe_stub import StripeStub, account_json, account_link_json, stripe_stub  # noqa: F401

ACCOUNT_ID = "acct_1QaZ2x4FbnGQ8Yk1"


async def test_simulated_onboarding_creates_the_account_once(client, actors, settings):
    settings.stripe_simulate_connect = True
    tester = await actors.signed_in("tester")
    first = await client.post("/api/payments/connect/onboard", headers=tester["headers"])
    assert first.status_code == 200, first.text
    assert "simulated_onboarding=1" in first.json()["url"]
    user = await user_doc(tester["id"])
    assert user.stripe_account_id == f"acct_sim_{tester['id']}" and user.payouts_enabled

    again = await client.post("/api/payments/connect/onboard", headers=tester["headers"])
    assert again.status_code == 200 and (await user_doc(tester["id"])).stripe_account_id == user.stripe_account_id


async def test_onboarding_is_for_testers_only(client, actors):
    builder = await actors.signed_in("builder")
    resp = await client.post("/api/payments/connect/onboard", headers=builder["headers"])
    assert resp.status_code == 403 and resp.json()["error"] == "wrong_role"
    assert (await client.post("/api/payments/connect/onboard")).status_code == 401


def serve_connect(stub: StripeStub, tester: dict, *, payouts_enabled: bool) -> None:
    stub.on("POST", "/v1/accounts", account_json(ACCOUNT_ID, tester["email"], tester["id"], payouts_enabled=False))
    stub.on("POST", "/v1/account_links", account_link_json(ACCOUNT_ID))
    stub.on("GET", f"/v1/accounts/{ACCOUNT_ID}",
            account_json(ACCOUNT_ID, tester["email"], tester["id"], payouts_enabled=payouts_enabled))


async def test_real_sdk_onboarding_requests(client, actors, stripe_stub: StripeStub, settings):  # noqa: F811
    tester = await actors.signed_in("tester")
    serve_connect(stripe_stub, tester, payouts_enabled=False)

    resp = await client.post("/api/payments/connect/onboard", headers=tester["headers"])
    assert resp.status_code == 200, resp.text
    assert resp.json()["url"] == f"https://connect.stripe.com/setup/e/{ACCOUNT_ID}/Xq3b0VtKjP2a"

    [create] = stripe_stub.sent("POST", "/v1/accounts")
    assert create.form == {"type": "express", "email": tester["email"], "capabilities[transfers][requested]": "true",
                           "metadata[user_id]": tester["id"]}
    assert create.headers["Idempotency-Key"] == f"connect-account:{tester['id']}"
    assert create.headers["Authorization"] == f"Bearer {settings.stripe_secret_key}"
    [link] = stripe_stub.sent("POST", "/v1/account_links")
    base = settings.frontend_base_url
    assert link.form == {"account": ACCOUNT_ID, "type": "account_onboarding",
                         "refresh_url": f"{base}/payouts/connect/refresh", "return_url": f"{base}/payouts/connect/return"}
    user = await user_doc(tester["id"])
    assert user.stripe_account_id == ACCOUNT_ID and user.payouts_enabled is False  # onboarding not finished

    await client.post("/api/payments/connect/onboard", headers=tester["headers"])
    assert len(stripe_stub.sent("POST", "/v1/accounts")) == 1  # the account is created once
    assert len(stripe_stub.sent("POST", "/v1/account_links")) == 2  # links expire: a fresh one each time


async def test_account_updated_webhook_rereads_the_account(client, actors, stripe_stub: StripeStub):  # noqa: F811
    tester = await actors.signed_in("tester")
    serve_connect(stripe_stub, tester, payouts_enabled=True)
    await client.post("/api/payments/connect/onboard", headers=tester["headers"])
    assert (await user_doc(tester["id"])).payouts_enabled is False

    # The event's own copy is stale on purpose: the handler must trust the re-read account.
    stale = account_json(ACCOUNT_ID, tester["email"], tester["id"], payouts_enabled=False)
    body = stripe_event("account.updated", stale, "evt_acct_1")
    for _ in range(2):  # a duplicate delivery is stored once
        assert (await post_stripe_event(client, body)).status_code == 200
    await drain_jobs()
    assert (await user_doc(tester["id"])).payouts_enabled is True
    assert [r.path for r in stripe_stub.sent("GET", f"/v1/accounts/{ACCOUNT_ID}")] == [f"/v1/accounts/{ACCOUNT_ID}"]
    assert (await InboxEvent.find_one(InboxEvent.event_id == "evt_acct_1")).status == "processed"

    stripe_stub.on("GET", f"/v1/accounts/{ACCOUNT_ID}",
                   account_json(ACCOUNT_ID, tester["email"], tester["id"], payouts_enabled=False))
    await post_stripe_event(client, stripe_event("account.updated", stale, "evt_acct_2"))
    await drain_jobs()
    assert (await user_doc(tester["id"])).payouts_enabled is False  # e.g. Stripe asked for more details


async def test_account_updated_for_unknown_account_is_ignored(client, stripe_stub: StripeStub):  # noqa: F811
    body = stripe_event("account.updated", {"id": "acct_someone_else", "object": "account"}, "evt_acct_x")
    assert (await post_stripe_event(client, body)).status_code == 200
    await drain_jobs()
    assert stripe_stub.requests == []
    assert (await InboxEvent.find_one(InboxEvent.event_id == "evt_acct_x")).status == "processed"


async def test_concurrent_onboarding_keeps_one_account(client, actors, settings):
    settings.stripe_simulate_connect = True
    tester = await actors.signed_in("tester")
    results = await asyncio.gather(*[client.post("/api/payments/connect/onboard", headers=tester["headers"])
                                     for _ in range(5)])
    assert {r.status_code for r in results} == {200}
    assert (await user_doc(tester["id"])).stripe_account_id == f"acct_sim_{tester['id']}"
