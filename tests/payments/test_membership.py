"""Membership end to end against localstripe: checkout, then signed subscription webhooks."""

from datetime import timedelta

from app.integrations import payments
from app.kit.timeutil import as_utc, utcnow
from app.payments import membership as payments_service
from app.payments.models import InboxEvent
from app.users.models import Membership
from tests.fixtures.factories import drain_jobs, post_stripe_event, stripe_event, user_doc


class Member:
    def __init__(self, client, builder: dict):
        self.client = client
        self.builder = builder
        self.headers = builder["headers"]

    async def checkout(self, payment_method_id: str = "pm_card_visa", **extra):
        return await self.client.post("/api/payments/membership/checkout",
                                      json={"payment_method_id": payment_method_id, **extra}, headers=self.headers)

    async def membership(self) -> dict:
        resp = await self.client.get("/api/payments/membership", headers=self.headers)
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def event(self, event_type: str, subscription_id: str, event_id: str | None = None) -> None:
        """Deliver a signed event carrying the subscription (or, for invoice.*, its latest invoice)
        as the provider has it now."""
        obj = (await payments.retrieve_subscription(subscription_id)).to_dict()
        if event_type.startswith("invoice."):
            obj = (await payments.client().v1.invoices.retrieve_async(obj["latest_invoice"])).to_dict()
        resp = await post_stripe_event(self.client, stripe_event(event_type, obj, event_id))
        assert resp.status_code == 200, resp.text
        await drain_jobs()


async def member(client, actors) -> Member:
    return Member(client, await actors.signed_in("builder"))


async def test_checkout_then_webhooks_drive_the_membership(client, actors, settings):
    m = await member(client, actors)
    resp = await m.checkout()
    assert resp.status_code == 200, resp.text
    started = resp.json()
    assert started["subscription_id"].startswith("sub_") and started["status"] == "active"
    assert started["client_secret"] is None  # paid at once: nothing left for the client to confirm

    # Not active before the provider's webhook says so.
    assert await m.membership() == {"status": "incomplete", "current_period_end_at": None,
                                    "subscription_id": started["subscription_id"], "cancel_at_period_end": False}
    user = await user_doc(m.builder["id"])
    assert user.stripe_customer_id.startswith("cus_") and not await payments_service.has_active_membership(user)
    customer = (await payments.client().v1.customers.retrieve_async(user.stripe_customer_id)).to_dict()
    assert customer["invoice_settings"]["default_payment_method"].startswith("pm_")
    plan = await payments.client().v1.plans.retrieve_async(settings.membership_plan_id)
    assert (plan.amount, plan.interval) == (settings.membership_price_cents, "month")

    await m.event("customer.subscription.created", started["subscription_id"], "evt_sub_created")
    active = await m.membership()
    assert active["status"] == "active" and active["cancel_at_period_end"] is False
    period_end = (await user_doc(m.builder["id"])).membership.current_period_end_at
    assert timedelta(days=27) < as_utc(period_end) - utcnow() < timedelta(days=32)
    assert await payments_service.has_active_membership(await user_doc(m.builder["id"]))

    # A duplicate delivery is stored once and changes nothing.
    await m.event("customer.subscription.created", started["subscription_id"], "evt_sub_created")
    assert await InboxEvent.find(InboxEvent.event_id == "evt_sub_created").count() == 1
    assert (await m.membership()) == active

    again = await m.checkout()
    assert again.status_code == 409 and again.json()["error"] == "membership_active"

    await payments.cancel_subscription(started["subscription_id"])
    await m.event("customer.subscription.deleted", started["subscription_id"], "evt_sub_deleted")
    cancelled = await m.membership()
    assert cancelled["status"] == "cancelled" and cancelled["subscription_id"] == started["subscription_id"]
    assert not await payments_service.has_active_membership(await user_doc(m.builder["id"]))


async def test_declined_first_payment_returns_a_client_secret(client, actors):
    m = await member(client, actors)
    resp = await m.checkout("pm_card_chargeCustomerFail")
    assert resp.status_code == 200, resp.text
    started = resp.json()
    assert started["status"] == "incomplete" and "_secret_" in started["client_secret"]

    subscription = (await payments.retrieve_subscription(started["subscription_id"])).to_dict()
    invoice = {"id": subscription["latest_invoice"], "object": "invoice",
               "parent": {"subscription_details": {"subscription": started["subscription_id"]}}}  # current API shape
    assert (await post_stripe_event(client, stripe_event("invoice.payment_failed", invoice))).status_code == 200
    await drain_jobs()
    assert (await m.membership())["status"] == "incomplete"

    # Retrying with a good card replaces the unpaid subscription instead of adding a second one.
    retry = (await m.checkout("pm_card_visa")).json()
    assert retry["status"] == "active" and retry["subscription_id"] != started["subscription_id"]
    old = await payments.retrieve_subscription(started["subscription_id"])
    assert old.status == "canceled"
    await m.event("customer.subscription.deleted", started["subscription_id"])  # the old one's event: ignored
    await m.event("invoice.payment_succeeded", retry["subscription_id"])
    assert (await m.membership())["status"] == "active"
    assert (await m.membership())["subscription_id"] == retry["subscription_id"]


async def test_cancel_at_period_end_stays_active_until_then(client, actors):
    m = await member(client, actors)
    sub_id = (await m.checkout()).json()["subscription_id"]
    await payments.client().v1.subscriptions.update_async(sub_id, params={"cancel_at_period_end": True})
    await m.event("customer.subscription.updated", sub_id)
    state = await m.membership()
    assert (state["status"], state["cancel_at_period_end"]) == ("active", True)
    assert await payments_service.has_active_membership(await user_doc(m.builder["id"]))


async def test_has_active_membership_ends_after_the_period_and_grace(settings):
    settings.membership_grace_seconds = 3600
    user = await _user_with(Membership(status="active", subscription_id="sub_x",
                                       current_period_end_at=utcnow() - timedelta(minutes=30)))
    assert await payments_service.has_active_membership(user)
    user.membership.current_period_end_at = utcnow() - timedelta(hours=2)
    assert not await payments_service.has_active_membership(user)
    for status in ("past_due", "incomplete", "cancelled", "none"):
        user.membership = Membership(status=status, current_period_end_at=utcnow() + timedelta(days=3))
        assert not await payments_service.has_active_membership(user)


async def _user_with(membership: Membership):
    from app.users.models import User

    return User(email="m@example.com", password_hash="x", role="builder", display_name="M", membership=membership)


async def test_bad_input_and_wrong_role(client, actors):
    m = await member(client, actors)
    for body in ({}, {"payment_method_id": "card_123"}, {"payment_method_id": "pm_ok", "plan": "gold"},
                 {"payment_method_id": {"$gt": ""}}, {"payment_method_id": "pm_" + "x" * 300}):
        resp = await client.post("/api/payments/membership/checkout", json=body, headers=m.headers)
        assert resp.status_code == 422, (body, resp.text)
    unknown = await m.checkout("pm_doesnotexist")
    assert unknown.status_code == 402 and unknown.json()["error"] == "payment_method_rejected"

    tester = await actors.signed_in("tester")
    resp = await client.post("/api/payments/membership/checkout", json={"payment_method_id": "pm_card_visa"},
                             headers=tester["headers"])
    assert resp.status_code == 403
    assert (await client.get("/api/payments/membership", headers=tester["headers"])).status_code == 403
    assert (await client.get("/api/payments/membership")).status_code == 401


async def test_events_for_strangers_change_nothing(client, actors):
    m = await member(client, actors)
    other = await member(client, actors)
    sub_id = (await other.checkout()).json()["subscription_id"]
    before = await m.membership()
    # Someone else's subscription, even if its metadata claims our builder, does not land on them.
    await payments.client().v1.subscriptions.update_async(sub_id, params={"metadata": {"user_id": m.builder["id"]}})
    await m.event("customer.subscription.updated", sub_id)
    assert await m.membership() == before
    assert (await other.membership())["status"] == "active"  # found through its subscription id


# -- at most one live subscription per builder -------------------------------------------------------
async def mastercard() -> str:
    """A second valid test card, created as Stripe.js would (localstripe has no pm_card_mastercard)."""
    method = await payments.client().v1.payment_methods.create_async(params={
        "type": "card", "card": {"number": "5555555555554444", "exp_month": 12, "exp_year": 2030, "cvc": "123"}})
    return method.id


async def live_subscriptions(builder_id: str) -> list[dict]:
    customer_id = (await user_doc(builder_id)).stripe_customer_id
    return await payments.list_subscriptions(customer_id) if customer_id else []


async def test_two_concurrent_checkouts_with_different_cards_subscribe_once(client, actors):
    import asyncio

    m = await member(client, actors)
    second_card = await mastercard()
    responses = await asyncio.gather(m.checkout("pm_card_visa"), m.checkout(second_card))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409], [r.text for r in responses]
    [won] = [r.json() for r in responses if r.status_code == 200]
    [lost] = [r for r in responses if r.status_code == 409]
    assert lost.json()["error"] in ("membership_checkout_in_progress", "membership_active"), lost.text
    live = await live_subscriptions(m.builder["id"])
    assert [s["id"] for s in live] == [won["subscription_id"]], live
    assert (await m.membership())["subscription_id"] == won["subscription_id"]

    # Once the winner is done, a retry with the other card is refused, not subscribed a second time.
    retry = await m.checkout(second_card)
    assert retry.status_code == 409 and retry.json()["error"] == "membership_active", retry.text
    assert [s["id"] for s in await live_subscriptions(m.builder["id"])] == [won["subscription_id"]]


async def subscribed_at_the_provider(m: Member, settings, key: str) -> tuple[str, dict]:
    """A live subscription made directly at the provider for this builder's customer, paid with a visa."""
    from app.payments.service import ensure_customer

    customer_id = await ensure_customer(await user_doc(m.builder["id"]))
    await payments.attach_payment_method("pm_card_visa", customer_id)
    plan_id = await payments.ensure_plan(settings.membership_plan_id, settings.membership_price_cents, "membership")
    sub = await payments.create_subscription(customer_id, plan_id, {"user_id": m.builder["id"]}, idempotency_key=key)
    return customer_id, sub.to_dict()


async def test_a_live_subscription_unknown_to_our_records_blocks_a_checkout(client, actors, settings):
    m = await member(client, actors)
    # A subscription made at the provider that our records never heard of (e.g. a checkout that
    # died right after subscribing, its webhooks not yet in).
    _, orphan = await subscribed_at_the_provider(m, settings, "test-orphan")
    assert orphan["status"] == "active"
    assert (await m.membership())["subscription_id"] is None

    resp = await m.checkout(await mastercard())
    assert resp.status_code == 409, resp.text
    assert resp.json()["error"] == "membership_active"
    assert [s["id"] for s in await live_subscriptions(m.builder["id"])] == [orphan["id"]]
    state = await m.membership()
    assert (state["status"], state["subscription_id"]) == ("active", orphan["id"])  # now we know it


async def test_a_checkout_that_raced_another_cancels_and_refunds_its_own_subscription(client, actors, settings,
                                                                                      monkeypatch):
    """Past its lock, a checkout may subscribe while another one already did: the later one gives
    way, cancelling its subscription and refunding the first invoice it paid."""
    import asyncio

    from app.payments import membership as membership_service

    m = await member(client, actors)
    customer_id, first = await subscribed_at_the_provider(m, settings, "test-first")
    await asyncio.sleep(1.1)  # strictly older, to the second

    async def saw_nothing_live(*_):
        return None  # the race: the other checkout subscribed after this one looked

    monkeypatch.setattr(membership_service, "_release_previous", saw_nothing_live)
    resp = await m.checkout(await mastercard())
    assert resp.status_code == 409 and resp.json()["error"] == "membership_active", resp.text
    assert resp.json()["detail"]["subscription_id"] == first["id"]
    assert [s["id"] for s in await live_subscriptions(m.builder["id"])] == [first["id"]]
    ours = [s for s in (await payments.client().v1.subscriptions.list_async(
        params={"customer": customer_id, "status": "all"})).data if s.id != first["id"]]
    [second] = ours
    assert second.status == "canceled"
    invoice = await payments.client().v1.invoices.retrieve_async(second.latest_invoice)
    refunded = await payments.list_refunds(invoice.payment_intent)
    assert [r.amount for r in refunded] == [settings.membership_price_cents]  # its first payment came back
