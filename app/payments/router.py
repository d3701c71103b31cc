from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from app.auth.dependencies import BuilderUser, TesterUser
from app.errors import (
    InvalidWebhookSignature,
    MembershipActive,
    PayloadTooLarge,
    PaymentMethodRejected,
    PaymentProviderError,
)
from app.kit.idempotency import Idempotency, Operation
from app.ops.openapi import errors
from app.payments import connect, inbox, membership
from app.payments.membership import MembershipCheckoutInProgress
from app.payments.schemas import CheckoutStarted, MembershipCheckout, MembershipStatus, OnboardingLink

router = APIRouter(tags=["payments"])


_STRIPE_EVENT = {
    "parameters": [{"name": "Stripe-Signature", "in": "header", "required": True, "schema": {"type": "string"},
                    "description": "`t=<unix time>,v1=<HMAC-SHA256 of \"t.body\">` with the signing secret"}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["id", "type", "data"], "description": "A Stripe event, read as raw bytes",
        "properties": {"id": {"type": "string"}, "type": {"type": "string"}, "data": {"type": "object"}}}}}},
}


@router.post("/webhooks/stripe", status_code=200, responses=errors(InvalidWebhookSignature, PayloadTooLarge),
             openapi_extra=_STRIPE_EVENT)
async def stripe_webhook(request: Request) -> dict:
    """Stripe calls this. The signature is checked against the raw body; each event id is applied once."""
    record = await inbox.receive(await request.body(), request.headers.get("stripe-signature"))
    return {"received": True, "event_id": record.event_id}


@router.post("/payments/connect/onboard", response_model=OnboardingLink, responses=errors(PaymentProviderError))
async def connect_onboard(user: TesterUser) -> OnboardingLink:
    """Creates the tester's Stripe Express account on first use and returns an onboarding link.
    Payouts open once the provider reports `payouts_enabled` (account.updated webhook)."""
    return OnboardingLink(url=await connect.onboarding_link(user))


@router.post("/payments/membership/checkout", response_model=CheckoutStarted,
             responses=errors(PaymentMethodRejected, MembershipActive, MembershipCheckoutInProgress,
                              PaymentProviderError))
async def membership_checkout(body: MembershipCheckout, user: BuilderUser,
                              idem: Annotated[Idempotency, Depends()]) -> JSONResponse:
    """Subscribes the builder to the monthly membership, paying with `payment_method_id`."""

    async def action(op: Operation) -> CheckoutStarted:
        return CheckoutStarted(**await membership.start_membership(user, body.payment_method_id, op.id))

    return await idem.run(user.id, body, action)


@router.get("/payments/membership", response_model=MembershipStatus)
async def membership_status(user: BuilderUser) -> MembershipStatus:
    """Membership status and period end, as the provider's webhooks last reported them."""
    return MembershipStatus.of(user.membership)

