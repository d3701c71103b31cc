from datetime import datetime
from typing import Literal

from beanie import Document, PydanticObjectId
from pydantic import Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from app.kit.timeutil import utcnow

DepositStatus = Literal["pending", "succeeded", "failed", "canceled"]
RefundStatus = Literal["pending", "succeeded", "failed"]


class Deposit(Document):
    """Money a builder pays in; it becomes wallet funds only when the provider's webhook confirms it."""

    builder_id: PydanticObjectId
    amount_cents: int
    day: str  # UTC date (YYYY-MM-DD) whose daily quota this deposit counts against
    status: DepositStatus = "pending"
    payment_intent_id: str | None = None
    client_secret: str | None = None
    failure_reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    succeeded_at: datetime | None = None
    failed_at: datetime | None = None

    class Settings:
        name = "deposits"
        indexes = [
            IndexModel([("builder_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("payment_intent_id", ASCENDING)]),
        ]


class DepositQuota(Document):
    """Pending + succeeded deposit cents of one builder on one UTC day; moved by guarded $inc."""

    id: str  # "<builder_id>:<YYYY-MM-DD>"
    builder_id: PydanticObjectId
    day: str
    reserved_cents: int = 0
    expires_at: datetime  # a past day's quota is only history

    class Settings:
        name = "deposit_quotas"
        indexes = [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)]


class WalletAllocation(Document):
    """A lot: one succeeded deposit, used up oldest first by refunds within the refund window."""

    builder_id: PydanticObjectId
    deposit_id: PydanticObjectId
    payment_intent_id: str
    amount_cents: int
    remaining_cents: int
    refundable_until_at: datetime
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "wallet_allocations"
        indexes = [
            IndexModel([("deposit_id", ASCENDING)], unique=True),
            # equality, sort, range: the FIFO scan of a builder's open lots
            IndexModel([("builder_id", ASCENDING), ("created_at", ASCENDING), ("remaining_cents", ASCENDING)]),
        ]


class WalletRefund(Document):
    """One provider refund against one lot; a refund request touching several lots shares request_id."""

    builder_id: PydanticObjectId
    request_id: str
    allocation_id: PydanticObjectId
    deposit_id: PydanticObjectId
    payment_intent_id: str
    amount_cents: int
    status: RefundStatus = "pending"
    provider_refund_id: str | None = None
    failure_reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    resolved_at: datetime | None = None

    class Settings:
        name = "wallet_refunds"
        indexes = [
            IndexModel([("builder_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("status", ASCENDING), ("created_at", ASCENDING)]),
            IndexModel([("request_id", ASCENDING)]),
        ]


class ExternalRefund(Document):
    """A refund made at the provider outside this app (e.g. in the dashboard) against a deposit."""

    id: str  # the provider's refund id
    builder_id: PydanticObjectId
    deposit_id: PydanticObjectId
    payment_intent_id: str
    amount_cents: int
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "external_refunds"
        indexes = [IndexModel([("payment_intent_id", ASCENDING)]), IndexModel([("created_at", DESCENDING)])]


class Chargeback(Document):
    """A card dispute on a deposit: what the provider withdrew from us and what it gave back."""

    id: str  # the provider's dispute id
    builder_id: PydanticObjectId | None  # None: the payment is no deposit of ours (reconciliation lists it)
    deposit_id: PydanticObjectId | None
    payment_intent_id: str | None
    amount_cents: int
    status: str  # the provider's: needs_response, under_review, won, lost, ...
    reason: str | None = None
    withdrawn_cents: int = 0
    reinstated_cents: int = 0
    balance_transactions: list[str] = Field(default_factory=list)  # applied, each once
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "chargebacks"
        indexes = [IndexModel([("payment_intent_id", ASCENDING)]), IndexModel([("created_at", DESCENDING)])]
