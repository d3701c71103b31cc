from datetime import datetime
from typing import Annotated

from pydantic import Field, StrictInt

from app.kit.schemas import Output, StrictInput

# Strict: 10.0 or "10" are rejected, not coerced. The configured minimum is a business rule (service).
Cents = Annotated[StrictInt, Field(ge=1, le=1_000_000_000)]


class PayoutCreate(StrictInput):
    amount_cents: Cents


class Payout(Output):
    id: str
    amount_cents: int
    status: str
    transfer_id: str | None = None
    failure_reason: str | None = None
    reversed_cents: int
    created_at: datetime
    resolved_at: datetime | None = None


class PayoutBalance(Output):
    available_cents: int
    pending_cents: int
