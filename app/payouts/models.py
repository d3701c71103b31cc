from datetime import datetime
from typing import Literal

from beanie import Document, PydanticObjectId
from pydantic import Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from app.kit.timeutil import utcnow

PayoutStatus = Literal["pending", "paid", "failed", "reversed"]


class Payout(Document):
    """A tester withdrawal: available -> payout_pending when requested, then one provider transfer
    settles it (-> external) or fails it (-> back to available). Resolves at most once."""

    tester_id: PydanticObjectId
    amount_cents: int
    destination_account_id: str  # the connected account checked at request time
    status: PayoutStatus = "pending"
    transfer_id: str | None = None
    failure_reason: str | None = None
    reversed_cents: int = 0  # returned by transfer reversals after it was paid
    early_reversed_cents: int = 0  # reversed at the provider before we recorded the transfer
    created_at: datetime = Field(default_factory=utcnow)
    resolved_at: datetime | None = None

    class Settings:
        name = "payouts"
        indexes = [
            IndexModel([("tester_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("status", ASCENDING), ("created_at", ASCENDING)]),
            IndexModel([("transfer_id", ASCENDING)], sparse=True),
        ]

