from datetime import datetime
from typing import Literal

from beanie import Document, PydanticObjectId
from pydantic import BaseModel, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from app.kit.timeutil import utcnow

HoldStatus = Literal["held", "released", "refunded", "voided", "split"]


class Resolution(BaseModel):
    tester_cents: int
    fee_cents: int
    builder_cents: int
    reason: str


class EscrowTransaction(Document):
    """A two-phase hold inside our ledger: available -> held, then resolved exactly once."""

    key: str  # one hold per business reason, e.g. "assignment:<id>"
    builder_id: PydanticObjectId
    tester_id: PydanticObjectId
    amount_cents: int  # the tester's payout
    fee_cents: int  # platform fee, held on top of the payout
    status: HoldStatus = "held"
    refs: dict[str, str] = Field(default_factory=dict)  # job_id, assignment_id, submission_id ...
    resolution: Resolution | None = None
    created_at: datetime = Field(default_factory=utcnow)
    resolved_at: datetime | None = None

    @property
    def total_cents(self) -> int:
        return self.amount_cents + self.fee_cents

    class Settings:
        name = "escrow_transactions"
        indexes = [
            IndexModel([("key", ASCENDING)], unique=True),
            IndexModel([("builder_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("tester_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("status", ASCENDING), ("builder_id", ASCENDING)]),
        ]
