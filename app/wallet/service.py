"""The builder wallet: what it holds and what moved through it. The money paths live beside this
file by concern: deposits.py (paying in), refunds.py (paying back), quota.py (the daily limit) and
chargebacks.py (money the provider took back without us).

Accounts: builder:{id}:available (spendable), builder:{id}:held (escrow), builder:{id}:refund_pending
(refunds in flight), builder:{id}:receivable (owed after a chargeback, at or below zero).
"""

from typing import Any

from beanie import PydanticObjectId
from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from app.config import get_settings
from app.errors import NotFound
from app.kit.pagination import PageParams, paginate
from app.ledger import service as ledger
from app.ledger.accounts import builder_available, builder_held, builder_receivable, builder_refund_pending
from app.ledger.models import Journal
from app.ledger.schemas import Entry, EntryLine
from app.wallet import quota
from app.wallet.models import Deposit, WalletRefund


def wallet_accounts(builder_id: Any) -> list[str]:
    return [builder_available(builder_id), builder_held(builder_id), builder_refund_pending(builder_id),
            builder_receivable(builder_id)]


async def wallet_summary(builder_id: PydanticObjectId) -> dict[str, int]:
    available, held, refund_pending, receivable = wallet_accounts(builder_id)
    balances = await ledger.balances([available, held, refund_pending, receivable])
    return {
        "available_cents": balances[available], "held_cents": balances[held],
        "refund_pending_cents": balances[refund_pending], "owed_cents": -balances[receivable],
        "deposited_today_cents": await quota.used_today(builder_id),
        "daily_limit_cents": get_settings().daily_deposit_limit_cents,
    }


async def entries(builder_id: PydanticObjectId, page: PageParams) -> tuple[list[Entry], str | None]:
    """The caller's journal entries, newest first, one item per journal."""
    names = wallet_accounts(builder_id)
    available = builder_available(builder_id)
    journals, nxt = await paginate(Journal, {"accounts": {"$in": names}}, page)
    items = []
    for journal in journals:
        lines = [EntryLine(account=p.account, amount_cents=p.amount) for p in journal.postings if p.account in names]
        delta = sum(line.amount_cents for line in lines if line.account == available)
        items.append(Entry.of(journal, available_delta_cents=delta, lines=lines))
    return items, nxt


async def deposits(builder_id: PydanticObjectId, page: PageParams) -> tuple[list[Deposit], str | None]:
    return await paginate(Deposit, {"builder_id": builder_id}, page)


async def get_deposit(builder_id: PydanticObjectId, deposit_id: ObjectId) -> Deposit:
    deposit = await Deposit.find_one({"_id": deposit_id, "builder_id": builder_id})
    if deposit is None:
        raise NotFound("deposit not found")
    return deposit


async def refunds(builder_id: PydanticObjectId, page: PageParams) -> tuple[list[WalletRefund], str | None]:
    return await paginate(WalletRefund, {"builder_id": builder_id}, page)


@ledger.register_expectation
async def refund_pending_equals_pending_refunds(session: AsyncClientSession) -> tuple[str, str, dict[str, int]]:
    totals = await ledger.open_totals(session, WalletRefund, "pending", "builder_id", "$amount_cents")
    return "refund_pending_equals_pending_refunds", "refund_pending", {
        builder_refund_pending(owner): cents for owner, cents in totals.items()
    }
