from fastapi import APIRouter, Request

from app.payments import inbox

router = APIRouter(tags=["payments"])


@router.post("/webhooks/stripe", status_code=200)
async def stripe_webhook(request: Request) -> dict:
    """Stripe calls this. The signature is checked against the raw body; each event id is applied once."""
    record = await inbox.receive(await request.body(), request.headers.get("stripe-signature"))
    return {"received": True, "event_id": record.event_id}
