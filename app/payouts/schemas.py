from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StrictInt

from app.config import get_settings
from app.kit.schemas import Output, StrictInput

# Strict: 10.0 or "10" are rejected, not coerced. The configured minimum is a business rule (service).
Cents = Annotated[StrictInt, Field(ge=1, le=1_000_000_000)]


def _payout_bounds(schema: dict[str, Any]) -> None:
    """The document shows the configured minimum, read when it is generated."""
    schema.update(minimum=get_settings().min_payout_cents)


class PayoutCreate(StrictInput):
    amount_cents: Annotated[Cents, Field(
        json_schema_extra=_payout_bounds,
        description="at least MIN_PAYOUT_CENTS (smaller amounts get 422 `payout_below_minimum`) and at most the "
                    "available earnings (409 `insufficient_funds`)")]


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
