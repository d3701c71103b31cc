"""Builder membership through Stripe subscriptions.

The provider is the source of truth: webhook handlers re-retrieve the subscription and store what it
says now, so duplicate and out-of-order events converge on the same state.

Checkout takes a payment method the client collected with Stripe.js (or a test card id such as
pm_card_visa), attaches it as the customer's invoice default and subscribes with
payment_behavior=allow_incomplete. localstripe has neither Prices, Checkout nor default_incomplete,
so this is the one path both localstripe and Stripe serve. When the first payment needs the client
(3DS, decline), the subscription is `incomplete` and we return its invoice's client_secret.

At most one live subscription per builder: a checkout holds a short lock on the builder (a second
concurrent one gets 409), and it asks the provider, not our records, whether a subscription is
already live, so a checkout that died after subscribing is not repeated with another card.
"""

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from beanie import PydanticObjectId
from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from app.config import get_settings
from app.db import run_in_transaction
from app.errors import Conflict, MembershipActive, PaymentMethodRejected, PaymentProviderError
from app.integrations import payments
from app.kit.timeutil import as_utc, utcnow
from app.payments import inbox
from app.payments.service import ensure_customer
from app.users.models import Membership, User

log = logging.getLogger(__name__)
PLAN_PRODUCT_NAME = "PeerTest Hub membership"
CHECKOUT_LOCK = timedelta(seconds=60)
# Stripe subscription status -> ours
_STATUS = {
    "active": "active", "trialing": "active",
    "past_due": "past_due", "unpaid": "past_due", "paused": "past_due",
    "incomplete": "incomplete",
    "incomplete_expired": "cancelled", "canceled": "cancelled",
}


class MembershipCheckoutInProgress(Conflict):
    code, default_detail = "membership_checkout_in_progress", "Another membership checkout is still running."
    response_headers = {"Retry-After": "Seconds to wait before trying again."}


async def start_membership(user: User, payment_method_id: str, operation_id: Any) -> dict[str, Any]:
    lock = await _lock_checkout(user.id)
    try:
        return await _checkout(user, payment_method_id, operation_id)
    finally:
        await _unlock_checkout(user.id, lock)


async def _checkout(user: User, payment_method_id: str, operation_id: Any) -> dict[str, Any]:
    customer_id = await ensure_customer(user)
    await _release_previous(user.id, customer_id)
    try:
        await payments.attach_payment_method(payment_method_id, customer_id)
    except PaymentProviderError as exc:
        if payments.outcome_unknown(exc):
            raise
        raise PaymentMethodRejected(exc.detail) from exc
    settings = get_settings()
    plan_id = await payments.ensure_plan(settings.membership_plan_id, settings.membership_price_cents,
                                         PLAN_PRODUCT_NAME)
    sub = (await payments.create_subscription(customer_id, plan_id, {"user_id": str(user.id)},
                                              idempotency_key=f"membership:{operation_id}")).to_dict()
    await _keep_only_the_first(user.id, customer_id, sub)
    await _record_checkout(user.id, sub["id"])
    status = _STATUS.get(sub["status"], "incomplete")
    invoice = sub.get("latest_invoice")
    secret = await payments.invoice_client_secret(invoice) if status == "incomplete" and invoice else None
    return {"subscription_id": sub["id"], "status": status, "client_secret": secret}


async def _keep_only_the_first(user_id: PydanticObjectId, customer_id: str, created: dict[str, Any]) -> None:
    """A checkout that outlived its lock may race another. Both sides pick the same winner (the
    oldest live subscription, by creation then id); a loser cancels its own subscription and
    refunds the first invoice it paid, so a builder is never charged twice."""
    live = [s for s in await payments.list_subscriptions(customer_id)
            if _STATUS.get(s["status"]) in ("active", "past_due") or s["id"] == created["id"]]
    winner = min(live or [created], key=lambda s: (s.get("created") or 0, s["id"]))
    if winner["id"] == created["id"]:
        return
    await payments.cancel_subscription(created["id"])
    await _refund_first_invoice(created)
    await _store_membership(user_id, winner)
    raise MembershipActive({"status": _STATUS.get(winner["status"], "incomplete"), "subscription_id": winner["id"]})


async def _refund_first_invoice(sub: dict[str, Any]) -> None:
    invoice = sub.get("latest_invoice")
    intent_id = invoice.get("payment_intent") if isinstance(invoice, dict) else None
    if intent_id and invoice.get("status") == "paid" and invoice.get("amount_paid"):
        await payments.create_refund(intent_id, int(invoice["amount_paid"]), {"subscription_id": sub["id"]},
                                     idempotency_key=f"membership-duplicate:{sub['id']}")


async def _lock_checkout(user_id: PydanticObjectId) -> datetime:
    """Take the builder's checkout lock; its expiry is the holder's token."""
    now = utcnow()
    until = now + CHECKOUT_LOCK

    async def lock(session: AsyncClientSession) -> bool:
        result = await User.get_pymongo_collection().update_one(
            {"_id": user_id, "$or": [{"checkout_locked_until": None}, {"checkout_locked_until": {"$lte": now}}]},
            {"$set": {"checkout_locked_until": until}}, session=session)
        return bool(result.matched_count)

    if not await run_in_transaction(lock):
        raise MembershipCheckoutInProgress(headers={"Retry-After": str(int(CHECKOUT_LOCK.total_seconds()))})
    return until


async def _unlock_checkout(user_id: PydanticObjectId, lock: datetime) -> None:
    """Only our own lock: a checkout that outlived it must not free a later one's."""

    async def unlock(session: AsyncClientSession) -> None:
        await User.get_pymongo_collection().update_one({"_id": user_id, "checkout_locked_until": lock},
                                                       {"$set": {"checkout_locked_until": None}}, session=session)

    await run_in_transaction(unlock)


async def _release_previous(user_id: PydanticObjectId, customer_id: str) -> None:
    """Refuse when the provider has a live subscription for this customer; cancel unpaid ones."""
    for sub in await payments.list_subscriptions(customer_id):
        status = _STATUS.get(sub["status"], "incomplete")
        if status in ("active", "past_due"):
            await _store_membership(user_id, sub)
            raise MembershipActive({"status": status, "subscription_id": sub["id"]})
        if status == "incomplete":
            await payments.cancel_subscription(sub["id"])


async def _record_checkout(user_id: PydanticObjectId, subscription_id: str) -> None:
    """Remember the subscription so its webhooks find us; its status comes from those webhooks
    (unless one already arrived, hence the filter)."""
    pending = Membership(status="incomplete", subscription_id=subscription_id, updated_at=utcnow())

    async def store(session: AsyncClientSession) -> None:
        await User.get_pymongo_collection().update_one(
            {"_id": user_id, "membership.subscription_id": {"$ne": subscription_id}},
            {"$set": {"membership": pending.model_dump()}}, session=session)

    await run_in_transaction(store)


@inbox.handles("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted")
async def on_subscription_event(event: dict[str, Any]) -> None:
    await sync_membership(event["data"]["object"]["id"])


# localstripe sends invoice.payment_succeeded; Stripe sends it along with invoice.paid.
@inbox.handles("invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed")
async def on_invoice_event(event: dict[str, Any]) -> None:
    if subscription_id := payments.invoice_subscription_id(event["data"]["object"]):
        await sync_membership(subscription_id)


async def sync_membership(subscription_id: str) -> None:
    sub = (await payments.retrieve_subscription(subscription_id)).to_dict()
    user = await _subscriber(sub)
    if user is None:
        log.warning("subscription %s belongs to no builder here", subscription_id)
        return
    await _store_membership(user.id, sub)


async def _subscriber(sub: dict[str, Any]) -> User | None:
    user_id = (sub.get("metadata") or {}).get("user_id", "")
    if ObjectId.is_valid(user_id):
        user = await User.get(PydanticObjectId(user_id))
        if user is not None and user.stripe_customer_id == sub.get("customer"):
            return user
    return await User.find_one({"membership.subscription_id": sub["id"]})


async def _store_membership(user_id: PydanticObjectId, sub: dict[str, Any]) -> None:
    """Events of a builder's older, replaced subscription change nothing, unless that one is the
    live subscription and the one we recorded is not (a checkout that died after subscribing)."""
    status = _STATUS.get(sub["status"], "incomplete")
    membership = Membership(status=status, subscription_id=sub["id"], current_period_end_at=_period_end(sub),
                            cancel_at_period_end=bool(sub.get("cancel_at_period_end")), updated_at=utcnow())
    ours = {"membership.subscription_id": {"$in": [None, sub["id"]]}}
    if status in ("active", "past_due"):
        ours = {"$or": [ours, {"membership.status": {"$in": ["none", "incomplete", "cancelled"]}}]}

    async def store(session: AsyncClientSession) -> None:
        await User.get_pymongo_collection().update_one(
            {"_id": user_id, **ours},
            {"$set": {"membership": membership.model_dump(), "updated_at": utcnow()}}, session=session)

    await run_in_transaction(store)


def _period_end(sub: dict[str, Any]) -> datetime | None:
    """Per item in current API versions, on the subscription in older ones (and localstripe)."""
    items = (sub.get("items") or {}).get("data") or []
    end = (items[0].get("current_period_end") if items else None) or sub.get("current_period_end")
    return datetime.fromtimestamp(end, UTC) if end else None


async def has_active_membership(user: User) -> bool:
    """Active until the paid period ends (plus a grace for late renewal webhooks)."""
    membership = user.membership
    if membership.status != "active":
        return False
    if membership.current_period_end_at is None:
        return True
    grace = timedelta(seconds=get_settings().membership_grace_seconds)
    return as_utc(membership.current_period_end_at) + grace > utcnow()
