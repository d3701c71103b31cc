from datetime import datetime
from typing import Any, Literal

from beanie import Document
from pydantic import Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from app.kit.timeutil import utcnow


class InboxEvent(Document):
    """An inbound provider event, stored once per (source, event_id); its processing is the outbox
    task inbox:<source>:<event_id>, where retries and dead-lettering are recorded."""

    source: str = "stripe"
    event_id: str
    type: str
    payload: dict[str, Any]
    status: Literal["received", "processed", "ignored", "failed"] = "received"
    attempts: int = 0
    error: str | None = None
    received_at: datetime = Field(default_factory=utcnow)
    created_at: datetime = Field(default_factory=utcnow)
    processed_at: datetime | None = None

    class Settings:
        name = "inbox_events"
        indexes = [
            IndexModel([("source", ASCENDING), ("event_id", ASCENDING)], unique=True),
            IndexModel([("status", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)]),
        ]
