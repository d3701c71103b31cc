from datetime import datetime
from typing import Any

from app.kit.schemas import Output


class InvariantReport(Output):
    ok: bool
    violations: list[dict[str, Any]]
    accounts: int
    journals_accounts: int


class EntryLine(Output):
    account: str
    amount_cents: int


class Entry(Output):
    """One journal as its owner sees it: the owner's own postings, and their net effect on the
    owner's available balance (an escrow hold moves available to held: -total, with two lines)."""

    id: str
    type: str
    available_delta_cents: int
    lines: list[EntryLine]
    refs: dict[str, str]
    memo: str | None = None
    created_at: datetime
