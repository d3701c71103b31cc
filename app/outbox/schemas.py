from datetime import datetime
from typing import Any

from app.kit.schemas import Output


class OutboxTaskOut(Output):
    id: str
    task: str
    args: list[Any]
    label: str
    queue: str
    status: str
    attempts: int
    max_attempts: int
    due_at: datetime
    give_up_at: datetime
    lease_until: datetime | None = None
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
