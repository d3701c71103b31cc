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
