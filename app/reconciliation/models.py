from datetime import datetime
from typing import Any

from beanie import Document
from pydantic import Field
from pymongo import DESCENDING, IndexModel


class ReconciliationReport(Document):
    """One run: what was compared, what could not be, and every difference found."""

    started_at: datetime
    finished_at: datetime | None = None
    checked: dict[str, int] = Field(default_factory=dict)
    skipped: dict[str, str] = Field(default_factory=dict)  # check name -> why it could not run
    mismatches: list[dict[str, Any]] = Field(default_factory=list)  # the first 1,000
    mismatch_count: int = 0
    ok: bool = True
    created_at: datetime | None = None  # = started_at, for keyset pagination

    class Settings:
        name = "reconciliation_reports"
        indexes = [IndexModel([("started_at", DESCENDING)])]
