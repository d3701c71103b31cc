from datetime import datetime
from typing import Any, Literal

from beanie import Document
from pydantic import Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from app.kit.timeutil import utcnow

TaskStatus = Literal["pending", "done", "dead"]


class OutboxTask(Document):
    """Work that must happen after a commit, written in that same transaction. The queue message
    that usually runs it at once is only a hint; the sweep re-sends any task that is due."""

    id: str  # the business key, e.g. "payout:<id>:transfer": a task is added at most once
    task: str  # dotted path of the async function to call
    args: list[Any] = Field(default_factory=list)
    queue: str = "high"
    label: str = ""  # what it is, for operators
    status: TaskStatus = "pending"
    attempts: int = 0  # toward max_attempts; a replay starts them over
    runs: int = 0  # every run, ever (a replay keeps counting): a run after the first looks before it acts
    max_attempts: int = 12
    max_age_seconds: int = 48 * 3600  # its own budget; give_up_at = start (or replay) + this
    due_at: datetime = Field(default_factory=utcnow)
    give_up_at: datetime  # failing past this instant dead-letters the task
    lease_until: datetime | None = None  # a worker is running it until then
    lease_token: str | None = None
    last_error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    expires_at: datetime | None = None  # done tasks are kept a while, then removed (TTL)

    class Settings:
        name = "outbox"
        indexes = [
            IndexModel([("status", ASCENDING), ("due_at", ASCENDING)]),
            IndexModel([("status", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),
        ]
