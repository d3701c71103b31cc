"""Ledger account names: one place that says which balances exist.

Balances are credit-positive: a positive `builder:X:available` is money we owe builder X. Only
`external:stripe` (money outside the platform) and receivables (money a user owes us after a
chargeback or a refund made outside the app) may go below zero.
"""

from typing import Any

EXTERNAL = "external:stripe"
REVENUE = "platform:revenue"
RECEIVABLE = "receivable"


def account(role: str, owner_id: Any, bucket: str) -> str:
    return f"{role}:{owner_id}:{bucket}"


def builder_available(builder_id: Any) -> str:
    return account("builder", builder_id, "available")


def builder_held(builder_id: Any) -> str:
    return account("builder", builder_id, "held")


def builder_refund_pending(builder_id: Any) -> str:
    return account("builder", builder_id, "refund_pending")


def builder_receivable(builder_id: Any) -> str:
    """What a builder owes the platform (a balance at or below zero)."""
    return account("builder", builder_id, RECEIVABLE)


def tester_available(tester_id: Any) -> str:
    return account("tester", tester_id, "available")


def tester_payout_pending(tester_id: Any) -> str:
    return account("tester", tester_id, "payout_pending")


def may_go_negative(name: str) -> bool:
    return name == EXTERNAL or name.endswith(f":{RECEIVABLE}")
