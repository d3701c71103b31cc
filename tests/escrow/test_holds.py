"""Escrow holds through the service API: resolution at most once, under concurrency too."""

import asyncio

import pytest

from app.db import run_in_transaction
from app.errors import HoldAlreadyResolved, InsufficientFunds, Unprocessable
from app.escrow import service as escrow
from app.escrow.models import EscrowTransaction
from app.ledger import service as ledger
from app.ledger import accounts
from app.ledger.accounts import REVENUE
from app.ledger.models import Journal
from tests.fixtures.factories import fund_wallet, new_id


async def wallet(builder_id):
    b = await ledger.balances([accounts.builder_available(builder_id), accounts.builder_held(builder_id)])
    return b[accounts.builder_available(builder_id)], b[accounts.builder_held(builder_id)]


async def test_hold_release_moves_payout_and_fee(settings):
    settings.platform_fee_bps = 1000
    builder, tester = new_id(), new_id()
    await fund_wallet(builder, 10_000)
    hold = await escrow.hold_now(builder, tester, 2_000, key="assignment:a1", refs={"job_id": "j1"})
    assert (hold.amount_cents, hold.fee_cents, hold.status) == (2_000, 200, "held")
    assert await wallet(builder) == (7_800, 2_200)

    released = await escrow.release_now(hold.id)
    assert released.status == "released"
    assert await wallet(builder) == (7_800, 0)
    assert await ledger.balance(accounts.tester_available(tester)) == 2_000
    assert await ledger.balance(REVENUE) == 200
    with pytest.raises(HoldAlreadyResolved):
        await escrow.void_now(hold.id)
    assert (await ledger.check_invariants())["ok"]


async def test_void_and_refund_return_everything():
    builder, tester = new_id(), new_id()
    await fund_wallet(builder, 5_000)
    first = await escrow.hold_now(builder, tester, 1_000, key="a:1")
    second = await escrow.hold_now(builder, tester, 1_000, key="a:2")
    await escrow.void_now(first.id)
    await escrow.void_now(second.id, status="refunded")
    assert await wallet(builder) == (5_000, 0)
    statuses = {h.status for h in await EscrowTransaction.find_all().to_list()}
    assert statuses == {"voided", "refunded"}
    assert (await ledger.check_invariants())["ok"]


async def test_split_prorates_fee(settings):
    settings.platform_fee_bps = 1000
    builder, tester = new_id(), new_id()
    await fund_wallet(builder, 5_000)
    hold = await escrow.hold_now(builder, tester, 3_000, key="a:split")  # fee 300
    with pytest.raises(Unprocessable):
        await escrow.split_now(hold.id, 3_000)
    with pytest.raises(Unprocessable):
        await escrow.split_now(hold.id, 0)
    done = await escrow.split_now(hold.id, 1_000)
    assert done.resolution.model_dump() == {"tester_cents": 1_000, "fee_cents": 100, "builder_cents": 2_200,
                                            "reason": "split"}
    assert await wallet(builder) == (5_000 - 3_300 + 2_200, 0)
    assert await ledger.balance(REVENUE) == 100
    assert (await ledger.check_invariants())["ok"]


async def test_hold_needs_funds_and_unique_key():
    builder = new_id()
    await fund_wallet(builder, 1_000)
    with pytest.raises(InsufficientFunds):
        await escrow.hold_now(builder, new_id(), 1_000, key="a:x")  # 1000 + 100 fee > 1000
    assert await EscrowTransaction.count() == 0 and await Journal.find(Journal.type == "escrow.hold").count() == 0
    await escrow.hold_now(builder, new_id(), 500, key="a:y")
    with pytest.raises(escrow.HoldExists):
        await escrow.hold_now(builder, new_id(), 100, key="a:y")
    assert (await ledger.check_invariants())["ok"]


async def test_twenty_concurrent_holds_on_funds_for_three(settings):
    settings.platform_fee_bps = 1000
    builder = new_id()
    await fund_wallet(builder, 3 * 1_100 + 50)
    results = await asyncio.gather(
        *[escrow.hold_now(builder, new_id(), 1_000, key=f"a:{i}") for i in range(20)], return_exceptions=True
    )
    held = [r for r in results if isinstance(r, EscrowTransaction)]
    refused = [r for r in results if isinstance(r, InsufficientFunds)]
    assert len(held) == 3 and len(refused) == 17
    assert await wallet(builder) == (50, 3_300)
    assert (await ledger.check_invariants())["ok"]


async def test_ten_concurrent_releases_resolve_once():
    builder, tester = new_id(), new_id()
    await fund_wallet(builder, 2_000)
    hold = await escrow.hold_now(builder, tester, 1_000, key="a:race")
    results = await asyncio.gather(*[escrow.release_now(hold.id) for _ in range(10)], return_exceptions=True)
    assert sum(isinstance(r, EscrowTransaction) for r in results) == 1
    assert sum(isinstance(r, HoldAlreadyResolved) for r in results) == 9
    assert await ledger.balance(accounts.tester_available(tester)) == 1_000
    assert await Journal.find(Journal.type == "escrow.release").count() == 1
    assert (await ledger.check_invariants())["ok"]


async def test_fault_after_journal_before_balance_leaves_no_trace(monkeypatch):
    builder = new_id()
    await fund_wallet(builder, 2_000)
    journals_before = await Journal.count()

    async def explode(session, line):
        raise RuntimeError("injected fault between journal insert and balance update")

    monkeypatch.setattr(ledger, "_apply", explode)
    with pytest.raises(RuntimeError):
        await escrow.hold_now(builder, new_id(), 500, key="a:fault")
    monkeypatch.undo()
    assert await Journal.count() == journals_before
    assert await EscrowTransaction.count() == 0
    assert await wallet(builder) == (2_000, 0)
    assert (await ledger.check_invariants())["ok"]


async def test_hold_composes_with_caller_transaction():
    """A failure later in the caller's transaction rolls the hold back too."""
    builder = new_id()
    await fund_wallet(builder, 2_000)

    async def accept_then_fail(session):
        await escrow.hold(session, builder, new_id(), 500, key="a:compose")
        raise ValueError("slot already taken")

    with pytest.raises(ValueError):
        await run_in_transaction(accept_then_fail)
    assert await wallet(builder) == (2_000, 0)
