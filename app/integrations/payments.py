"""The payment provider (Stripe) behind one small interface.

Locally the same SDK calls go to localstripe (STRIPE_API_BASE). localstripe has no Connect, so
with STRIPE_SIMULATE_CONNECT=true account creation, onboarding links and transfers are answered
here instead of by the provider (the embedded default only; production talks to Stripe).
Every creating call carries an idempotency key derived from our own ids.
"""

import logging
import uuid
from functools import lru_cache
from typing import Any

import stripe

from app.config import get_settings
from app.errors import InvalidWebhookSignature, PaymentProviderError

log = logging.getLogger(__name__)


@lru_cache
def client() -> stripe.StripeClient:
    settings = get_settings()
    # Calls run inside outbox tasks whose lease (OUTBOX_LEASE_SECONDS) must outlast them, retries included.
    kwargs: dict[str, Any] = {"http_client": stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds),
                              "max_network_retries": 2}
    if settings.stripe_api_base:
        base = settings.stripe_api_base.rstrip("/")
        kwargs["base_addresses"] = {"api": base, "connect": base, "files": base}
    return stripe.StripeClient(settings.stripe_secret_key, **kwargs)


def _opts(idempotency_key: str | None) -> dict[str, Any]:
    return {"idempotency_key": idempotency_key} if idempotency_key else {}


# The provider's own messages are logged, never shown: clients get these stable reasons.
_REASONS: tuple[tuple[type[stripe.StripeError], str, str], ...] = (
    (stripe.CardError, "card_declined", "The card was declined."),
    (stripe.RateLimitError, "provider_busy", "The payment provider is busy; retry shortly."),
    (stripe.APIConnectionError, "provider_unreachable", "The payment provider could not be reached; retry shortly."),
    (stripe.IdempotencyError, "provider_conflict", "The payment provider is still processing this request."),
    (stripe.InvalidRequestError, "provider_rejected", "The payment provider rejected the request."),
    (stripe.AuthenticationError, "provider_misconfigured", "Payments are unavailable; operators were alerted."),
    (stripe.PermissionError, "provider_misconfigured", "Payments are unavailable; operators were alerted."),
)


def provider_failure(exc: stripe.StripeError) -> PaymentProviderError:
    reason, message = next(((r, m) for kind, r, m in _REASONS if isinstance(exc, kind)),
                           ("provider_error", "The payment provider failed; retry shortly."))
    log.warning("payment provider error", extra={"reason": reason, "provider_code": exc.code,
                                                 "http_status": exc.http_status, "provider_message": str(exc)})
    error = PaymentProviderError({"reason": reason, "message": message})
    error.args = (f"{error.args[0]} (provider said: {exc})",)  # for logs and the operators' outbox view only
    return error


async def call(coro) -> Any:
    """Await a provider call, turning its errors into our PaymentProviderError (502) with a stable reason."""
    try:
        return await coro
    except stripe.StripeError as exc:
        raise provider_failure(exc) from exc


# -- customers and payments ---------------------------------------------------------------------
async def create_customer(email: str, user_id: str) -> Any:
    return await call(client().v1.customers.create_async(
        params={"email": email, "metadata": {"user_id": user_id}}, options=_opts(f"customer:{user_id}")))


async def create_payment_intent(amount_cents: int, customer_id: str | None, metadata: dict[str, str],
                                idempotency_key: str) -> Any:
    params: dict[str, Any] = {"amount": amount_cents, "currency": "usd", "metadata": metadata,
                              "payment_method_types": ["card"]}
    if customer_id:
        params["customer"] = customer_id
    return await call(client().v1.payment_intents.create_async(params=params, options=_opts(idempotency_key)))


async def retrieve_payment_intent(payment_intent_id: str) -> Any:
    return await call(client().v1.payment_intents.retrieve_async(payment_intent_id))


async def cancel_payment_intent(payment_intent_id: str, idempotency_key: str) -> Any:
    return await call(client().v1.payment_intents.cancel_async(payment_intent_id, options=_opts(idempotency_key)))


async def create_refund(payment_intent_id: str, amount_cents: int, metadata: dict[str, str],
                        idempotency_key: str) -> Any:
    return await call(client().v1.refunds.create_async(
        params={"payment_intent": payment_intent_id, "amount": amount_cents, "metadata": metadata},
        options=_opts(idempotency_key)))


async def retrieve_refund(refund_id: str) -> Any:
    return await call(client().v1.refunds.retrieve_async(refund_id))


async def list_refunds(payment_intent_id: str) -> list[Any]:
    """The refunds of one PaymentIntent (newest first), to find one whose creation outcome we missed."""
    page = await call(client().v1.refunds.list_async(params={"payment_intent": payment_intent_id, "limit": 100}))
    return list(page.data)


async def retrieve_dispute(dispute_id: str) -> Any:
    return await call(client().v1.disputes.retrieve_async(dispute_id))


async def list_payment_intents(created_since: int) -> list[Any]:
    """PaymentIntents created since a unix time, every page."""
    return await _created_since(client().v1.payment_intents, created_since)


async def list_refunds_since(created_since: int) -> list[Any]:
    """Refunds created since a unix time, every page."""
    return await _created_since(client().v1.refunds, created_since)


async def _created_since(resource: Any, created_since: int) -> list[Any]:
    """localstripe refuses the `created` filter (a 400 or a 500, depending on the resource); then
    everything is listed and the filter applied here. Correct either way, only slower. A provider
    that cannot be reached (or asks us to slow down) is not listed twice."""
    try:
        page = await call(resource.list_async(params={"limit": 100, "created": {"gte": created_since}}))
    except PaymentProviderError as exc:
        status = getattr(exc.__cause__, "http_status", None)
        if isinstance(exc.__cause__, stripe.APIConnectionError) or status == 429:
            raise
        page = await call(resource.list_async(params={"limit": 100}))
    return [item for item in await _every(page) if item.created >= created_since]


async def list_disputes(created_since: int) -> list[Any]:
    return await _every(await call(client().v1.disputes.list_async(
        params={"limit": 100, "created": {"gte": created_since}})))


async def _every(page: Any) -> list[Any]:
    """Every item of a list, following the pages."""

    async def collect() -> list[Any]:
        return [item async for item in page.auto_paging_iter()]

    return await call(collect())


def outcome_unknown(exc: PaymentProviderError) -> bool:
    """True when the provider may have acted despite the error (network failure, 5xx, 429, or 409:
    the same idempotency key is still in flight): the caller must check or retry with the same
    idempotency key, never undo."""
    cause = exc.__cause__
    if isinstance(cause, stripe.APIConnectionError | stripe.IdempotencyError):
        return True  # an idempotency error says the key was used before: never take it as a refusal
    status = getattr(cause, "http_status", None)
    return isinstance(cause, stripe.StripeError) and status is not None and (status >= 500 or status in (409, 429))


# -- Connect (simulated in the embedded default) -------------------------------------------------
def _simulated(data: dict[str, Any]) -> Any:
    """A provider-shaped object answered locally (STRIPE_SIMULATE_CONNECT)."""
    return stripe.StripeObject.construct_from(data, None)


async def create_connect_account(email: str, user_id: str) -> Any:
    if get_settings().stripe_simulate_connect:
        return _simulated(
            {"id": f"acct_sim_{user_id}", "object": "account", "type": "express", "email": email,
             "payouts_enabled": True, "charges_enabled": True, "details_submitted": True})
    return await call(client().v1.accounts.create_async(
        params={"type": "express", "email": email, "capabilities": {"transfers": {"requested": True}},
                "metadata": {"user_id": user_id}},
        options=_opts(f"connect-account:{user_id}")))


async def create_account_link(account_id: str, refresh_url: str, return_url: str) -> str:
    if get_settings().stripe_simulate_connect:
        return f"{return_url}?simulated_onboarding=1&account={account_id}"
    link = await call(client().v1.account_links.create_async(
        params={"account": account_id, "refresh_url": refresh_url, "return_url": return_url,
                "type": "account_onboarding"}))
    return link.url


async def retrieve_account(account_id: str) -> Any:
    if get_settings().stripe_simulate_connect:
        return _simulated(
            {"id": account_id, "object": "account", "payouts_enabled": True, "details_submitted": True})
    return await call(client().v1.accounts.retrieve_async(account_id))


async def create_transfer(amount_cents: int, destination: str, metadata: dict[str, str],
                          idempotency_key: str, transfer_group: str) -> Any:
    if get_settings().stripe_simulate_connect:
        return _simulated(
            {"id": f"tr_sim_{uuid.uuid5(uuid.NAMESPACE_URL, idempotency_key).hex[:24]}", "object": "transfer",
             "amount": amount_cents, "currency": "usd", "destination": destination, "metadata": metadata,
             "transfer_group": transfer_group, "reversed": False})
    return await call(client().v1.transfers.create_async(
        params={"amount": amount_cents, "currency": "usd", "destination": destination, "metadata": metadata,
                "transfer_group": transfer_group},
        options=_opts(idempotency_key)))


async def find_transfer(transfer_group: str) -> Any | None:
    """The transfer already made for this group (one payout), if any: a retry looks before it
    creates, so a transfer is never made twice even after the idempotency key expired. Simulated
    transfers keep no state; their ids follow from the idempotency key instead."""
    if get_settings().stripe_simulate_connect:
        return None
    page = await call(client().v1.transfers.list_async(params={"transfer_group": transfer_group, "limit": 1}))
    return page.data[0] if page.data else None


async def list_transfers(created_since: int) -> list[Any]:
    return await _every(await call(client().v1.transfers.list_async(
        params={"limit": 100, "created": {"gte": created_since}})))


async def retrieve_transfer(transfer_id: str) -> Any:
    if get_settings().stripe_simulate_connect:  # simulated transfers are never reversed
        return _simulated(
            {"id": transfer_id, "object": "transfer", "amount_reversed": 0, "reversed": False})
    return await call(client().v1.transfers.retrieve_async(transfer_id))


# -- subscriptions (membership) -----------------------------------------------------------------
# Plans + items=[{"plan"}], not Prices/Checkout: localstripe and Stripe both serve this path.
async def attach_payment_method(payment_method_id: str, customer_id: str) -> Any:
    """Attach a card collected client-side (Stripe.js) and make it the customer's invoice default."""
    method = await call(client().v1.payment_methods.attach_async(payment_method_id, params={"customer": customer_id}))
    await call(client().v1.customers.update_async(
        customer_id, params={"invoice_settings": {"default_payment_method": method.id}}))
    return method


async def ensure_plan(plan_id: str, amount_cents: int, product_name: str) -> str:
    """The monthly plan, created on first use; a concurrent creator's plan is just as good."""
    try:
        return (await call(client().v1.plans.retrieve_async(plan_id))).id
    except PaymentProviderError as exc:
        if not isinstance(exc.__cause__, stripe.InvalidRequestError):
            raise
    try:
        plan = await call(client().v1.plans.create_async(
            params={"id": plan_id, "amount": amount_cents, "currency": "usd", "interval": "month",
                    "product": {"name": product_name}}, options=_opts(f"plan:{plan_id}:{amount_cents}")))
        return plan.id
    except PaymentProviderError:
        return (await call(client().v1.plans.retrieve_async(plan_id))).id


async def create_subscription(customer_id: str, plan_id: str, metadata: dict[str, str], idempotency_key: str) -> Any:
    """Charges the customer's default payment method now; `incomplete` when that payment needs the client."""
    return await call(client().v1.subscriptions.create_async(
        params={"customer": customer_id, "items": [{"plan": plan_id}], "payment_behavior": "allow_incomplete",
                "metadata": metadata, "expand": ["latest_invoice"]},
        options=_opts(idempotency_key)))


async def retrieve_subscription(subscription_id: str) -> Any:
    return await call(client().v1.subscriptions.retrieve_async(subscription_id))


async def list_subscriptions(customer_id: str) -> list[dict[str, Any]]:
    """The customer's subscriptions that are not cancelled or expired."""
    page = await call(client().v1.subscriptions.list_async(params={"customer": customer_id, "limit": 100}))
    return [sub.to_dict() for sub in page.data]


async def cancel_subscription(subscription_id: str) -> Any:
    return await call(client().v1.subscriptions.cancel_async(subscription_id))


async def invoice_client_secret(invoice: dict[str, Any]) -> str | None:
    """The client_secret the client confirms to pay an invoice. Older API versions (and localstripe)
    link invoice.payment_intent; current ones expose confirmation_secret, returned only when expanded."""
    if invoice.get("payment_intent"):
        return (await retrieve_payment_intent(invoice["payment_intent"])).client_secret
    expanded = await call(client().v1.invoices.retrieve_async(
        invoice["id"], params={"expand": ["confirmation_secret"]}))
    secret = expanded.to_dict().get("confirmation_secret") or {}
    return secret.get("client_secret")


def invoice_subscription_id(invoice: dict[str, Any]) -> str | None:
    """invoice.subscription in older API versions, parent.subscription_details in current ones."""
    parent = (invoice.get("parent") or {}).get("subscription_details") or {}
    return invoice.get("subscription") or parent.get("subscription")


# -- webhooks -----------------------------------------------------------------------------------
def construct_event(payload: bytes, signature: str | None) -> Any:
    """Verify Stripe-Signature over the raw body (with the tolerance window) and parse the event."""
    settings = get_settings()
    if not signature:
        raise InvalidWebhookSignature()
    try:
        return stripe.Webhook.construct_event(
            payload, signature, settings.stripe_webhook_secret, tolerance=settings.stripe_webhook_tolerance_seconds
        )
    except (stripe.SignatureVerificationError, ValueError):
        raise InvalidWebhookSignature() from None
