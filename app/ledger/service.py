"""The only way money moves: post() a balanced journal and $inc the balances in one transaction.

Every function taking a `session` must be called inside run_in_transaction(); it composes with
the caller's own state changes (a hold, a job slot, a submission) so they commit together.
"""

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from app.db import duplicate_key_as, run_in_transaction
from app.errors import Conflict, InsufficientFunds
from app.kit.timeutil import utcnow
from app.ledger.accounts import RECEIVABLE, builder_available, builder_receivable, may_go_negative
from app.ledger.models import AccountBalance, Journal, Posting


class JournalAlreadyPosted(Conflict):
    code, default_detail = "journal_already_posted", "This movement was already recorded."


class UnbalancedJournal(ValueError):
    pass


def _validate(postings: list[tuple[str, int]]) -> list[Posting]:
    if len(postings) < 2:
        raise UnbalancedJournal("a journal needs at least two postings")
    if any(type(amount) is not int or amount == 0 for _, amount in postings):
        raise UnbalancedJournal("posting amounts are non-zero integer cents")
    if sum(amount for _, amount in postings) != 0:
        raise UnbalancedJournal("postings must sum to zero")
    if len({name for name, _ in postings}) != len(postings):
        raise UnbalancedJournal("one posting per account")
    return [Posting(account=name, amount=amount) for name, amount in postings]


async def post(
    session: AsyncClientSession,
    type: str,
    key: str,
    postings: Iterable[tuple[str, int]],
    *,
    refs: dict[str, Any] | None = None,
    correlation_id: str | None = None,
    memo: str | None = None,
) -> Journal:
    """Record a balanced journal and apply it. Raises InsufficientFunds if a debit would take a
    bounded account below zero, JournalAlreadyPosted if `key` was used before."""
    lines = _validate(list(postings))
    journal = Journal(
        type=type,
        key=key,
        postings=lines,
        accounts=[p.account for p in lines],
        refs={k: str(v) for k, v in (refs or {}).items()},
        correlation_id=correlation_id,
        memo=memo,
    )
    with duplicate_key_as(JournalAlreadyPosted):
        await journal.insert(session=session)
    for line in sorted(lines, key=lambda p: p.amount):  # debits first: fail before writing credits
        await _apply(session, line)
    return journal


async def _apply(session: AsyncClientSession, line: Posting) -> None:
    coll = AccountBalance.get_pymongo_collection()
    update = {"$inc": {"balance": line.amount}, "$set": {"updated_at": utcnow()}}
    if line.amount > 0 or may_go_negative(line.account):
        await coll.update_one({"_id": line.account}, update, upsert=True, session=session)
        return
    guard = {"_id": line.account, "balance": {"$gte": -line.amount}}
    result = await coll.update_one(guard, update, session=session)
    if result.matched_count == 0:
        raise InsufficientFunds({"account": line.account, "needed_cents": -line.amount})


async def builder_inflow(session: AsyncClientSession, builder_id: Any, cents: int) -> list[tuple[str, int]]:
    """The postings that credit `cents` to a builder: what they owe (a receivable) is settled first,
    only the rest becomes spendable. Every inflow to a builder goes through here."""
    settle = min(cents, max(0, -await balance(builder_receivable(builder_id), session)))
    return [(name, amount) for name, amount in ((builder_receivable(builder_id), settle),
                                                (builder_available(builder_id), cents - settle)) if amount]


async def builder_owes(session: AsyncClientSession | None, builder_id: Any) -> int:
    """What a builder owes the platform (0 or more)."""
    return max(0, -await balance(builder_receivable(builder_id), session))


async def balances(accounts: Iterable[str], session: AsyncClientSession | None = None) -> dict[str, int]:
    """Current balances (0 for accounts never touched), in one query."""
    wanted = list(accounts)
    docs = await AccountBalance.find({"_id": {"$in": wanted}}, session=session).to_list()
    found = {d.id: d.balance for d in docs}
    return {a: found.get(a, 0) for a in wanted}


async def balance(account_name: str, session: AsyncClientSession | None = None) -> int:
    return (await balances([account_name], session))[account_name]


# -- invariants ---------------------------------------------------------------------------------
# Each money domain registers, where it is defined, what one bucket of accounts must hold, e.g.
# escrow says "every builder:X:held equals the sum of X's open holds".
# Signature: (session) -> (check name, account suffix, {account: expected cents}).
ExpectedBalances = Callable[[AsyncClientSession], Awaitable[tuple[str, str, dict[str, int]]]]
_expectations: list[ExpectedBalances] = []


def register_expectation(fn: ExpectedBalances) -> ExpectedBalances:
    _expectations.append(fn)
    return fn


async def check_invariants() -> dict[str, Any]:
    """Journals sum to zero; each balance equals its postings; nothing bounded is negative and no
    receivable is positive; each registered bucket (held, payout_pending, ...) equals the open items
    behind it. Everything is read in one snapshot, so concurrent traffic shows no false violations."""
    return await run_in_transaction(_check)


async def _check(session: AsyncClientSession) -> dict[str, Any]:
    violations: list[dict[str, Any]] = []
    pipeline = [{"$unwind": "$postings"}, {"$group": {"_id": "$postings.account", "sum": {"$sum": "$postings.amount"}}}]
    cursor = await Journal.get_pymongo_collection().aggregate(pipeline, session=session)
    posted = {row["_id"]: row["sum"] for row in await cursor.to_list()}
    stored = {d["_id"]: d["balance"] async for d in AccountBalance.get_pymongo_collection().find({}, session=session)}

    if (total := sum(posted.values())) != 0:
        violations.append({"check": "journals_sum_to_zero", "total_cents": total})
    for name in sorted(set(posted) | set(stored)):
        balance = stored.get(name, 0)
        if posted.get(name, 0) != balance:
            violations.append({"check": "balance_matches_postings", "account": name, "balance_cents": balance,
                               "postings_cents": posted.get(name, 0)})
        if balance < 0 and not may_go_negative(name):
            violations.append({"check": "no_negative_balance", "account": name, "balance_cents": balance})
        if balance > 0 and name.endswith(f":{RECEIVABLE}"):
            violations.append({"check": "receivable_not_positive", "account": name, "balance_cents": balance})
    for expectation in _expectations:
        check, suffix, expected = await expectation(session)
        for name, cents in _bucket_mismatches(suffix, expected, stored):
            violations.append({"check": check, "account": name, "balance_cents": stored.get(name, 0),
                               "expected_cents": cents})
    return {"ok": not violations, "violations": violations, "accounts": len(stored), "journals_accounts": len(posted)}


def _bucket_mismatches(suffix: str, expected: dict[str, int], stored: dict[str, int]):
    """Accounts of the bucket (same suffix) that differ from what the open items say."""
    names = set(expected) | {n for n in stored if n.endswith(f":{suffix}")}
    return [(n, expected.get(n, 0)) for n in sorted(names) if stored.get(n, 0) != expected.get(n, 0)]


async def open_totals(session: AsyncClientSession, model: Any, status: str, owner_field: str,
                      amount: Any) -> dict[Any, int]:
    """Sum of `amount` (a field path like "$amount_cents" or an expression) per owner, over the
    documents of `model` in `status`: what an expectation compares a bucket of accounts with."""
    rows = await (await model.get_pymongo_collection().aggregate([
        {"$match": {"status": status}},
        {"$group": {"_id": f"${owner_field}", "sum": {"$sum": amount}}},
    ], session=session)).to_list()
    return {row["_id"]: row["sum"] for row in rows}
