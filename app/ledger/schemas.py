from datetime import datetime
from typing import Any

from app.kit.schemas import Output


class InvariantReport(Output):
    ok: bool
    violations: list[dict[str, Any]]
    accounts: int
    journals_accounts: int


class Entry(Output):
    """One journal as seen from one of its accounts."""

    id: str
    type: str
    account: str
    amount_cents: int
    refs: dict[str, str]
    memo: str | None = None
    created_at: datetime
