import pytest

from app.db import run_in_transaction
from app.errors import InsufficientFunds
from app.ledger import service as ledger
from app.ledger.accounts import EXTERNAL
from app.ledger.models import AccountBalance
from tests.fixtures.factories import fund_wallet, new_id


async def test_post_rejects_unbalanced_or_float_or_duplicate():
    for postings in ([("a", 1), ("b", -2)], [("a", 1.5), ("b", -1.5)], [("a", 1)], [("a", 0), ("b", 0)],
                     [("a", 1), ("a", -1)]):
        with pytest.raises(ledger.UnbalancedJournal):
            await run_in_transaction(lambda s, p=postings: ledger.post(s, "t", "k", p))
    await run_in_transaction(lambda s: ledger.post(s, "t", "once", [(EXTERNAL, -1), ("x:1:available", 1)]))
    with pytest.raises(ledger.JournalAlreadyPosted):
        await run_in_transaction(lambda s: ledger.post(s, "t", "once", [(EXTERNAL, -1), ("x:1:available", 1)]))
    assert await ledger.balance("x:1:available") == 1


async def test_guard_keeps_bounded_accounts_non_negative():
    with pytest.raises(InsufficientFunds):
        await run_in_transaction(lambda s: ledger.post(s, "t", "k1", [("a:1:available", -5), ("b:1:available", 5)]))
    assert await AccountBalance.count() == 0


async def test_check_reports_tampering(client, actors):
    builder = new_id()
    await fund_wallet(builder, 700)
    assert (await ledger.check_invariants())["ok"]
    await AccountBalance.get_pymongo_collection().update_one(
        {"_id": f"builder:{builder}:available"}, {"$inc": {"balance": 5}}
    )
    await AccountBalance.get_pymongo_collection().insert_one({"_id": "builder:zzz:held", "balance": -3})
    report = await ledger.check_invariants()
    checks = {v["check"] for v in report["violations"]}
    assert not report["ok"]
    assert {"balance_matches_postings", "no_negative_balance", "held_equals_open_holds"} <= checks

    admin = await actors.admin()
    resp = await client.get("/api/admin/ledger/check", headers=admin["headers"])
    assert resp.status_code == 200 and resp.json()["ok"] is False
    tester = await actors.signed_in("tester")
    assert (await client.get("/api/admin/ledger/check", headers=tester["headers"])).status_code == 403


# -- the invariant check under concurrent traffic ---------------------------------------------------
async def _checks_during_escrow_traffic(builder, operations: int = 20, checkers: int = 2,
                                        pause: float = 0.02) -> list[dict]:
    """Run `operations` concurrent hold-then-resolve flows (release, void or split) on one funded
    builder while `checkers` loops call check_invariants(); returns the reports taken meanwhile."""
    import asyncio
    import uuid

    from app.escrow import service as escrow

    testers = [new_id() for _ in range(4)]
    resolvers = [escrow.release_now, escrow.void_now, lambda hold_id: escrow.split_now(hold_id, 400)]

    async def flow(i: int) -> None:
        hold = await escrow.hold_now(builder, testers[i % len(testers)], 1_000 + i, key=f"busy:{uuid.uuid4().hex}")
        await resolvers[i % len(resolvers)](hold.id)

    reports: list[dict] = []
    traffic_done = asyncio.Event()

    async def check_repeatedly() -> None:
        while not traffic_done.is_set():
            reports.append(await ledger.check_invariants())
            await asyncio.sleep(pause)

    loops = [asyncio.create_task(check_repeatedly()) for _ in range(checkers)]
    try:
        await asyncio.gather(*(flow(i) for i in range(operations)))
    finally:
        traffic_done.set()
        await asyncio.gather(*loops)
    return reports


async def test_check_sees_one_snapshot_while_holds_and_releases_run():
    from app.escrow.models import EscrowTransaction

    builder = new_id()
    await fund_wallet(builder, 100_000)
    reports = await _checks_during_escrow_traffic(builder)

    assert len(reports) >= 6, "the checks should overlap the traffic"
    assert all(r["ok"] for r in reports), [r["violations"] for r in reports if not r["ok"]]
    assert await EscrowTransaction.find(EscrowTransaction.status == "held").count() == 0
    assert await EscrowTransaction.count() == 20
    assert await ledger.balance(f"builder:{builder}:held") == 0
    final = await ledger.check_invariants()
    assert final["ok"] and final["accounts"] >= 7  # builder, 4 testers, revenue, external


async def test_a_corrupted_balance_is_reported_by_every_check_during_traffic():
    busy, tampered = new_id(), new_id()
    await fund_wallet(busy, 100_000)
    await fund_wallet(tampered, 900)
    await AccountBalance.get_pymongo_collection().update_one(
        {"_id": f"builder:{tampered}:available"}, {"$inc": {"balance": 25}})

    reports = await _checks_during_escrow_traffic(busy, operations=12)
    expected = [{"check": "balance_matches_postings", "account": f"builder:{tampered}:available",
                 "balance_cents": 925, "postings_cents": 900}]
    assert len(reports) >= 6
    assert all(r["violations"] == expected and not r["ok"] for r in reports), \
        [r["violations"] for r in reports if r["violations"] != expected]
