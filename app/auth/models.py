from datetime import datetime
from typing import Literal

from beanie import Document, PydanticObjectId
from pydantic import Field
from pymongo import ASCENDING, IndexModel

from app.kit.timeutil import utcnow


class RefreshToken(Document):
    """One refresh token of a rotation family; only its SHA-256 is stored."""

    token_hash: str
    user_id: PydanticObjectId
    family_id: str
    family_started_at: datetime | None = None  # the login that began the family (hard maximum age)
    token_version: int = 0  # the user's token version at issue
    expires_at: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "refresh_tokens"
        indexes = [
            IndexModel([("token_hash", ASCENDING)], unique=True),
            IndexModel([("family_id", ASCENDING)]),
            IndexModel([("user_id", ASCENDING)]),
            IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),
        ]


class OneTimeToken(Document):
    """Email verification and password reset tokens: single use, expiring, stored hashed."""

    token_hash: str
    purpose: Literal["verify_email", "password_reset"]
    user_id: PydanticObjectId
    expires_at: datetime
    used_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "one_time_tokens"
        indexes = [
            IndexModel([("token_hash", ASCENDING)], unique=True),
            IndexModel([("user_id", ASCENDING), ("purpose", ASCENDING)]),
            IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=3600),
        ]
