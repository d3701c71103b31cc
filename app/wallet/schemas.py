from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StrictInt, field_validator

from app.config import get_settings
from app.kit.schemas import Output, StrictInput
from app.wallet.models import Deposit, WalletRefund

# A hard ceiling before the configured bounds are consulted: no amount this large is ever valid.
Cents = Annotated[StrictInt, Field(ge=1, le=1_000_000_000)]


def _deposit_bounds(schema: dict[str, Any]) -> None:
    """The document shows the configured bounds, read when it is generated (the validator reads them live)."""
    settings = get_settings()
    schema.update(minimum=settings.min_deposit_cents, maximum=settings.max_deposit_cents)


def _refund_bounds(schema: dict[str, Any]) -> None:
    schema.update(maximum=refund_ceiling())


def refund_ceiling() -> int:
    """More than the daily limit over a whole refund window can never be refundable."""
    settings = get_settings()
    return settings.daily_deposit_limit_cents * settings.refund_window_days


class DepositCreate(StrictInput):
    amount_cents: Annotated[Cents, Field(
        json_schema_extra=_deposit_bounds,
        description="MIN_DEPOSIT_CENTS to MAX_DEPOSIT_CENTS; with today's deposits, at most DAILY_DEPOSIT_LIMIT_CENTS "
                    "a UTC day (409 `daily_limit_exceeded`)")]

    @field_validator("amount_cents")
    @classmethod
    def _within_deposit_bounds(cls, value: int) -> int:
        settings = get_settings()
        if not settings.min_deposit_cents <= value <= settings.max_deposit_cents:
            raise ValueError(
                f"amount_cents must be between {settings.min_deposit_cents} and {settings.max_deposit_cents}"
            )
        return value


class RefundCreate(StrictInput):
    amount_cents: Annotated[Cents, Field(
        json_schema_extra=_refund_bounds,
        description="at most the available balance, taken from deposits made within REFUND_WINDOW_DAYS "
                    "(409 `insufficient_funds`, or `balance_owed` while a chargeback is unpaid)")]

    @field_validator("amount_cents")
    @classmethod
    def _within_refundable_ceiling(cls, value: int) -> int:
        ceiling = refund_ceiling()
        if value > ceiling:
            raise ValueError(f"amount_cents must be at most {ceiling}")
        return value


class Wallet(Output):
    available_cents: int
    held_cents: int
    refund_pending_cents: int
    owed_cents: int  # after a chargeback or a refund made outside the app; deposits settle it first
    deposited_today_cents: int
    daily_limit_cents: int


class DepositCreated(Output):
    """What the client needs to pay: confirm `client_secret` with Stripe.js."""

    deposit_id: str
    status: str
    client_secret: str | None
    payment_intent_id: str | None
    amount_cents: int

    @classmethod
    def of(cls, d: Deposit) -> "DepositCreated":
        return super().of(d, deposit_id=d.id)


class DepositOut(Output):
    id: str
    amount_cents: int
    status: str
    payment_intent_id: str | None = None
    failure_reason: str | None = None
    created_at: datetime
    succeeded_at: datetime | None = None
    failed_at: datetime | None = None


class RefundLot(Output):
    """One provider refund against one deposit."""

    refund_id: str
    deposit_id: str
    amount_cents: int
    status: str
    failure_reason: str | None = None

    @classmethod
    def of(cls, r: WalletRefund) -> "RefundLot":
        return super().of(r, refund_id=r.id)


class RefundRequestOut(Output):
    request_id: str
    amount_cents: int
    refunds: list[RefundLot]


class RefundOut(RefundLot):
    request_id: str
    payment_intent_id: str
    provider_refund_id: str | None = None
    created_at: datetime
    resolved_at: datetime | None = None

