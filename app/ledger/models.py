from datetime import datetime

from beanie import Document
from pydantic import BaseModel, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from app.kit.timeutil import utcnow


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
