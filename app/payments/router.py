from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from app.auth.dependencies import AdminUser, BuilderUser, TesterUser
from app.kit.idempotency import Idempotency
from app.payments import connect, inbox, membership
from app.kit.pagination import Page, PageParams
from app.outbox.schemas import OutboxTaskOut
from app.payments.schemas import CheckoutStarted, InboxEventOut, MembershipCheckout, MembershipStatus, OnboardingLink

router = APIRouter(tags=["payments"])


@router.post("/webhooks/stripe", status_code=200)
async def stripe_webhook(request: Request) -> dict:
    """Stripe calls this. The signature is checked against the raw body; each event id is applied once."""
    record = await inbox.receive(await request.body(), request.headers.get("stripe-signature"))
    return {"received": True, "event_id": record.event_id}


@router.post("/payments/connect/onboard", response_model=OnboardingLink)
async def connect_onboard(user: TesterUser) -> OnboardingLink:
    """Creates the tester's Stripe Express account on first use and returns an onboarding link.
    Payouts open once the provider reports `payouts_enabled` (account.updated webhook)."""
    return OnboardingLink(url=await connect.onboarding_link(user))


@router.post("/payments/membership/checkout", response_model=CheckoutStarted,
             responses={402: {"description": "payment_method_rejected"},
                        409: {"description": "membership_active / membership_checkout_in_progress"}})
async def membership_checkout(body: MembershipCheckout, user: BuilderUser,
                              idem: Annotated[Idempotency, Depends()]) -> JSONResponse:
    """Subscribes the builder to the monthly membership, paying with `payment_method_id`."""

    async def action(_op) -> CheckoutStarted:
        return CheckoutStarted(**await membership.start_membership(user, body.payment_method_id))

    return await idem.run(user.id, body, action)


@router.get("/payments/membership", response_model=MembershipStatus)
async def membership_status(user: BuilderUser) -> MembershipStatus:
    """Membership status and period end, as the provider's webhooks last reported them."""
    return MembershipStatus.of(user.membership)


@router.get("/admin/webhook-events", response_model=Page[InboxEventOut], tags=["admin"])
async def list_webhook_events(_: AdminUser, page: Annotated[PageParams, Depends()],
                              status: Literal["received", "processed", "ignored", "failed"] | None = Query(None)
                              ) -> Page[InboxEventOut]:
    """Inbound provider events, newest first. A `failed` one is being retried; once its retries are
    exhausted its task is dead-lettered (GET /api/admin/outbox?status=dead)."""
    docs, nxt = await inbox.events(status, page)
    return Page(items=[InboxEventOut.of(d) for d in docs], next=nxt)


@router.post("/admin/webhook-events/{event_id}/replay", response_model=OutboxTaskOut, status_code=202,
             tags=["admin"], responses={404: {"description": "not_found"}, 409: {"description": "task_not_replayable"}})
async def replay_webhook_event(event_id: str, _: AdminUser) -> OutboxTaskOut:
    """Process a provider event again, e.g. after fixing what made its handler fail. Handlers
    re-read the provider's state, so a replay never moves money twice."""
    return OutboxTaskOut.of(await inbox.replay(event_id))
