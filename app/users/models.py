from datetime import datetime
from typing import Literal

from beanie import Document
from pydantic import BaseModel, Field
from pymongo import ASCENDING, IndexModel

from app.kit.timeutil import utcnow

Role = Literal["builder", "tester", "admin"]


class Membership(BaseModel):
    """Builder subscription, kept current by the payment provider's webhooks."""

    status: Literal["none", "incomplete", "active", "past_due", "cancelled"] = "none"
    subscription_id: str | None = None
    current_period_end_at: datetime | None = None
    cancel_at_period_end: bool = False
    updated_at: datetime | None = None


class Qualification(BaseModel):
    status: Literal["not_attempted", "passed", "failed"] = "not_attempted"
    score: int | None = None
    attempts: int = 0
    passed_at: datetime | None = None


class RatingSummary(BaseModel):
    average: float | None = None
    count: int = 0


class RevokedSession(BaseModel):
    """A logged-out session whose access tokens may still be unexpired."""

    family_id: str
    revoked_at: datetime


class User(Document):
    email: str
    password_hash: str
    role: Role
    display_name: str
    email_verified: bool = False
    is_active: bool = True
    flagged: bool = False
    flag_reason: str | None = None
    bio: str | None = None
    company: str | None = None
    website: str | None = None
    timezone: str | None = None
    skills: list[str] = Field(default_factory=list)
    # builder
    membership: Membership = Field(default_factory=Membership)
    weekly_budget_cap_cents: int | None = None
    monthly_budget_cap_cents: int | None = None
    stripe_customer_id: str | None = None
    checkout_locked_until: datetime | None = None  # a membership checkout is running
    # tester
    qualification: Qualification = Field(default_factory=Qualification)
    stripe_account_id: str | None = None
    payouts_enabled: bool = False
    rating: RatingSummary = Field(default_factory=RatingSummary)
    token_version: int = 0  # in every token; a password reset increments it
    revoked_sessions: list[RevokedSession] = Field(default_factory=list)  # pruned after the access-token TTL
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "users"
        indexes = [
            IndexModel([("email", ASCENDING)], unique=True),
            IndexModel([("role", ASCENDING), ("created_at", ASCENDING)]),
            IndexModel([("membership.subscription_id", ASCENDING)], sparse=True),
            IndexModel([("stripe_account_id", ASCENDING)], sparse=True),
        ]
