from datetime import datetime
from typing import Any

from app.kit.schemas import Output


class Report(Output):
    id: str
    started_at: datetime
    finished_at: datetime | None = None
    ok: bool
    checked: dict[str, int]
    skipped: dict[str, str]
    mismatches: list[dict[str, Any]]
    mismatch_count: int
