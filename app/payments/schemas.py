from datetime import datetime
from typing import Annotated

from pydantic import StringConstraints

from app.kit.schemas import Output, StrictInput

PaymentMethodId = Annotated[str, StringConstraints(pattern=r"^pm_[A-Za-z0-9_]{1,250}$")]


class OnboardingLink(Output):
    url: str


class MembershipCheckout(StrictInput):
    """The card the client collected with Stripe.js (stripe.createPaymentMethod), or a test card
    such as pm_card_visa. It becomes the customer's default for the monthly invoices."""

    payment_method_id: PaymentMethodId


class CheckoutStarted(Output):
    """`status` active: paid. `incomplete`: confirm `client_secret` with Stripe.js (3DS or a decline).
    Either way the membership turns active through the provider's webhook."""

    subscription_id: str
    status: str
    client_secret: str | None = None


class MembershipStatus(Output):
    status: str
    current_period_end_at: datetime | None = None
    subscription_id: str | None = None
    cancel_at_period_end: bool = False

class InboxEventOut(Output):
    id: str
    source: str
    event_id: str
    type: str
    status: str
    attempts: int
    error: str | None = None
    received_at: datetime
    processed_at: datetime | None = None
