"""Membership (Stripe subscriptions) and Connect onboarding for tester payouts.

The provider is the source of truth: webhook handlers re-retrieve the subscription or account and
store what it says now, so duplicate and out-of-order events converge on the same state.

Membership checkout takes a payment method the client collected with Stripe.js (or a test card id
such as pm_card_visa), attaches it as the customer's invoice default and subscribes with
payment_behavior=allow_incomplete. localstripe has neither Prices, Checkout nor default_incomplete,
so this is the one path both localstripe and Stripe serve. When the first payment needs the client
(3DS, decline), the subscription is `incomplete` and we return its invoice's client_secret.
"""

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from beanie import PydanticObjectId
from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from app.config import get_settings
from app.db import run_in_transaction
from app.errors import MembershipActive, PaymentMethodRejected, PaymentProviderError
from app.integrations import payments
from app.kit.timeutil import as_utc, utcnow
from app.payments import inbox
from app.users.models import Membership, User

log = logging.getLogger(__name__)
PLAN_PRODUCT_NAME = "PeerTest Hub membership"
# Stripe subscription status -> ours
_STATUS = {
    "active": "active", "trialing": "active",
    "past_due": "past_due", "unpaid": "past_due", "paused": "past_due",
    "incomplete": "incomplete",
    "incomplete_expired": "cancelled", "canceled": "cancelled",
}


async def _set_once(user_id: PydanticObjectId, field: str, value: str, extra: dict[str, Any] | None = None) -> str:
    """Store a provider id on the user once; when a concurrent request stored one first, use that."""

    async def store(session: AsyncClientSession) -> str:
        coll = User.get_pymongo_collection()
        result = await coll.update_one({"_id": user_id, field: None},
                                       {"$set": {field: value, "updated_at": utcnow(), **(extra or {})}},
                                       session=session)
        if result.matched_count:
            return value
        return (await coll.find_one({"_id": user_id}, {field: 1}, session=session))[field]

    return await run_in_transaction(store)


# -- Connect onboarding -------------------------------------------------------------------------
async def onboarding_link(user: User) -> str:
    """Creates the Express account once (its idempotency key is the user id), then a fresh link."""
    account_id = user.stripe_account_id
    if account_id is None:
        account = await payments.create_connect_account(user.email, str(user.id))
        account_id = await _set_once(user.id, "stripe_account_id", account.id,
                                     {"payouts_enabled": bool(account.payouts_enabled)})
    base = get_settings().frontend_base_url.rstrip("/")
    return await payments.create_account_link(account_id, f"{base}/payouts/connect/refresh",
                                              f"{base}/payouts/connect/return")


@inbox.handles("account.updated")
async def on_account_updated(event: dict[str, Any]) -> None:
    account_id = event["data"]["object"]["id"]
    if await User.find_one(User.stripe_account_id == account_id) is None:
        log.warning("account.updated for unknown account %s", account_id)
        return
    account = await payments.retrieve_account(account_id)

    async def store(session: AsyncClientSession) -> None:
        await User.get_pymongo_collection().update_one(
            {"stripe_account_id": account_id},
            {"$set": {"payouts_enabled": bool(account.payouts_enabled), "updated_at": utcnow()}}, session=session)

    await run_in_transaction(store)


# -- membership ---------------------------------------------------------------------------------
async def ensure_customer(user: User) -> str:
    """The builder's provider customer (deposits and membership), created once and kept on the user."""
    if not user.stripe_customer_id:
        customer = await payments.create_customer(user.email, str(user.id))
        user.stripe_customer_id = await _set_once(user.id, "stripe_customer_id", customer.id)
    return user.stripe_customer_id


async def start_membership(user: User, payment_method_id: str) -> dict[str, Any]:
    await _release_previous(user)
    customer_id = await ensure_customer(user)
    try:
        method = await payments.attach_payment_method(payment_method_id, customer_id)
    except PaymentProviderError as exc:
        if payments.outcome_unknown(exc):
            raise
        raise PaymentMethodRejected(exc.detail) from exc
    settings = get_settings()
    plan_id = await payments.ensure_plan(settings.membership_plan_id, settings.membership_price_cents,
                                         PLAN_PRODUCT_NAME)
    sub = (await payments.create_subscription(customer_id, plan_id, {"user_id": str(user.id)},
                                              idempotency_key=f"membership:{user.id}:{method.id}")).to_dict()
    await _record_checkout(user.id, sub["id"])
    status = _STATUS.get(sub["status"], "incomplete")
    invoice = sub.get("latest_invoice")
    secret = await payments.invoice_client_secret(invoice) if status == "incomplete" and invoice else None
    return {"subscription_id": sub["id"], "status": status, "client_secret": secret}


async def _release_previous(user: User) -> None:
    """One live subscription per builder: refuse when it is active, cancel an unpaid incomplete one."""
    if not user.membership.subscription_id:
        return
    sub = (await payments.retrieve_subscription(user.membership.subscription_id)).to_dict()
    status = _STATUS.get(sub["status"], "incomplete")
    if status in ("active", "past_due"):
        await _store_membership(user.id, sub)
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
    """Events of a builder's older, replaced subscription change nothing."""
    membership = Membership(status=_STATUS.get(sub["status"], "incomplete"), subscription_id=sub["id"],
                            current_period_end_at=_period_end(sub),
                            cancel_at_period_end=bool(sub.get("cancel_at_period_end")), updated_at=utcnow())

    async def store(session: AsyncClientSession) -> None:
        await User.get_pymongo_collection().update_one(
            {"_id": user_id, "membership.subscription_id": {"$in": [None, sub["id"]]}},
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
