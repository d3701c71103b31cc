from datetime import datetime
from typing import Any

from beanie import Document
from pydantic import BaseModel, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from app.kit.timeutil import utcnow

EXTERNAL = "external:stripe"
REVENUE = "platform:revenue"


def account(role: str, owner_id: Any, bucket: str) -> str:
    """builder:{id}:available, builder:{id}:held, tester:{id}:available, tester:{id}:payout_pending ..."""
    return f"{role}:{owner_id}:{bucket}"


class Posting(BaseModel):
    account: str
    amount: int  # cents; positive credits the account, negative debits it


class Journal(Document):
    """One immutable money movement. Postings sum to zero; corrections are new journals."""

    type: str
    key: str  # unique business key, e.g. "deposit:<id>": a movement can be posted at most once
    postings: list[Posting]
    accounts: list[str]  # denormalised for the "entries of an account" index
    refs: dict[str, str] = Field(default_factory=dict)
    correlation_id: str | None = None
    memo: str | None = None
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "journals"
        indexes = [
            IndexModel([("key", ASCENDING)], unique=True),
            IndexModel([("accounts", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("type", ASCENDING), ("created_at", ASCENDING)]),
            IndexModel([("correlation_id", ASCENDING)], sparse=True),
        ]


class AccountBalance(Document):
    """Running balance of one account, moved only by guarded $inc in the journal's transaction."""

    id: str  # the account name
    balance: int = 0
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "account_balances"


class ReconciliationReport(Document):
    started_at: datetime
    finished_at: datetime | None = None
    checked: dict[str, int] = Field(default_factory=dict)
    skipped: dict[str, str] = Field(default_factory=dict)  # check name -> why it could not run
    mismatches: list[dict[str, Any]] = Field(default_factory=list)
    ok: bool = True

    class Settings:
        name = "reconciliation_reports"
        indexes = [IndexModel([("started_at", DESCENDING)])]
