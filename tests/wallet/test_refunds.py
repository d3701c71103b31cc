"""Refunds: lots first in, first out, to the original PaymentIntents, inside the refund window."""

import asyncio
from datetime import timedelta

import stripe
from beanie import PydanticObjectId

from app.errors import PaymentProviderError
from app.escrow import service as escrow
from app.integrations import payments
from app.kit.timeutil import utcnow
from app.ledger import service as ledger
from app.outbox.models import OutboxTask
from app.wallet import refunds
from app.wallet.models import WalletAllocation, WalletRefund
from tests.fixtures.factories import new_id, settle_outbox


async def lots_by_deposit() -> dict[str, int]:
    return {str(lot.deposit_id): lot.remaining_cents for lot in await WalletAllocation.find_all().to_list()}


async def provider_refunds(intent_id: str) -> list[tuple[int, str]]:
    return [(r.amount, r.metadata["wallet_refund_id"]) for r in await payments.list_refunds(intent_id)]


async def test_refund_goes_back_to_the_original_payment(wallet):
    deposit = await wallet.funded(5_000)
    resp = await wallet.refund(2_000)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    [lot] = body["refunds"]
    assert body["amount_cents"] == 2_000 and body["request_id"]
    assert (lot["deposit_id"], lot["amount_cents"], lot["status"]) == (deposit["deposit_id"], 2_000, "succeeded")
    assert await provider_refunds(deposit["payment_intent_id"]) == [(2_000, lot["refund_id"])]

    summary = await wallet.summary()
    assert (summary["available_cents"], summary["refund_pending_cents"]) == (3_000, 0)
    assert await lots_by_deposit() == {deposit["deposit_id"]: 3_000}
    refund = await WalletRefund.get(PydanticObjectId(lot["refund_id"]))
    assert refund.provider_refund_id and refund.resolved_at and refund.request_id == body["request_id"]
    listed = (await wallet.client.get("/api/wallet/refunds", headers=wallet.headers)).json()["items"]
    assert [(r["refund_id"], r["status"], r["provider_refund_id"]) for r in listed] == [
        (lot["refund_id"], "succeeded", refund.provider_refund_id)]
    assert (await ledger.check_invariants())["ok"]


async def test_refunds_use_lots_oldest_first(wallet):
    first, second, third = [await wallet.funded(cents) for cents in (1_000, 2_000, 3_000)]
    body = (await wallet.refund(2_500)).json()
    assert [(r["deposit_id"], r["amount_cents"], r["status"]) for r in body["refunds"]] == [
        (first["deposit_id"], 1_000, "succeeded"), (second["deposit_id"], 1_500, "succeeded")]
    assert len({r["refund_id"] for r in body["refunds"]}) == 2
    body = (await wallet.refund(1_000)).json()
    assert [(r["deposit_id"], r["amount_cents"]) for r in body["refunds"]] == [
        (second["deposit_id"], 500), (third["deposit_id"], 500)]

    assert await lots_by_deposit() == {first["deposit_id"]: 0, second["deposit_id"]: 0, third["deposit_id"]: 2_500}
    assert sorted(a for a, _ in await provider_refunds(second["payment_intent_id"])) == [500, 1_500]
    assert (await wallet.summary())["available_cents"] == 2_500
    assert (await ledger.check_invariants())["ok"]


async def test_expired_lots_cannot_be_refunded(wallet):
    old, fresh = await wallet.funded(3_000), await wallet.funded(2_000)
    await WalletAllocation.find_one(WalletAllocation.deposit_id == PydanticObjectId(old["deposit_id"])).update(
        {"$set": {"refundable_until_at": utcnow() - timedelta(seconds=1)}})  # the window has passed

    refused = await wallet.refund(2_500)
    assert refused.status_code == 409 and refused.json()["error"] == "insufficient_funds"
    assert refused.json()["detail"]["reason"] == "refundable_deposits"
    assert refused.json()["detail"]["refundable_cents"] == 2_000
    body = (await wallet.refund(2_000)).json()
    assert [(r["deposit_id"], r["amount_cents"]) for r in body["refunds"]] == [(fresh["deposit_id"], 2_000)]
    assert await provider_refunds(old["payment_intent_id"]) == []
    assert (await wallet.summary())["available_cents"] == 3_000  # still spendable, just not refundable
    assert (await ledger.check_invariants())["ok"]


async def test_funds_held_in_escrow_are_not_refundable(wallet, settings):
    settings.platform_fee_bps = 1000
    await wallet.funded(5_000)
    await escrow.hold_now(PydanticObjectId(wallet.builder["id"]), new_id(), 2_000, key="assignment:x")
    refused = await wallet.refund(3_000)
    assert refused.status_code == 409
    assert refused.json()["detail"] == {"reason": "available_balance", "requested_cents": 3_000,
                                        "available_cents": 2_800}
    assert (await wallet.refund(2_800)).status_code == 201
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["held_cents"]) == (0, 2_200)
    assert (await ledger.check_invariants())["ok"]


async def test_provider_refusal_returns_the_funds(wallet, monkeypatch):
    deposit = await wallet.funded(5_000)

    async def refuse(*_, **__):
        raise payments.provider_failure(stripe.InvalidRequestError("charge already disputed", None))

    monkeypatch.setattr(payments, "create_refund", refuse)
    resp = await wallet.refund(2_000)
    assert resp.status_code == 201
    [lot] = resp.json()["refunds"]
    assert lot["status"] == "failed" and "provider_rejected" in lot["failure_reason"]
    assert "charge already disputed" not in resp.text
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["refund_pending_cents"]) == (5_000, 0)
    assert await lots_by_deposit() == {deposit["deposit_id"]: 5_000}
    assert (await ledger.check_invariants())["ok"]

    monkeypatch.undo()
    assert (await wallet.refund(5_000)).json()["refunds"][0]["status"] == "succeeded"
    assert (await wallet.summary())["available_cents"] == 0


async def test_unknown_outcome_stays_pending_until_the_retry_finishes_it(wallet, monkeypatch):
    """The provider made the refund but the answer was lost: the retry finds it, never refunds twice."""
    deposit = await wallet.funded(5_000)
    real = payments.create_refund

    async def lost_answer(*args, **kwargs):
        await real(*args, **kwargs)
        raise PaymentProviderError("network") from stripe.APIConnectionError("connection reset")

    monkeypatch.setattr(payments, "create_refund", lost_answer)
    [lot] = (await wallet.refund(2_000)).json()["refunds"]
    assert lot["status"] == "pending"
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["refund_pending_cents"]) == (3_000, 2_000)
    assert (await ledger.check_invariants())["ok"]

    task = await OutboxTask.get(refunds.submit_key(lot["refund_id"]))
    assert (task.status, task.attempts) == ("pending", 1) and task.due_at > task.created_at  # backing off
    monkeypatch.undo()
    assert await settle_outbox() == ["done"]

    assert (await WalletRefund.get(PydanticObjectId(lot["refund_id"]))).status == "succeeded"
    assert await provider_refunds(deposit["payment_intent_id"]) == [(2_000, lot["refund_id"])]
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["refund_pending_cents"]) == (3_000, 0)
    assert await settle_outbox() == []
    assert await refunds.submit(lot["refund_id"]) == "skipped"
    assert (await ledger.check_invariants())["ok"]


async def test_sweep_creates_a_refund_the_provider_never_received(wallet, monkeypatch):
    deposit = await wallet.funded(3_000)

    async def unreachable(*_, **__):
        raise PaymentProviderError("network") from stripe.APIConnectionError("connection refused")

    monkeypatch.setattr(payments, "create_refund", unreachable)
    [lot] = (await wallet.refund(3_000)).json()["refunds"]
    assert lot["status"] == "pending"
    monkeypatch.undo()
    assert await settle_outbox() == ["done"]
    assert (await WalletRefund.get(PydanticObjectId(lot["refund_id"]))).status == "succeeded"
    assert await provider_refunds(deposit["payment_intent_id"]) == [(3_000, lot["refund_id"])]
    assert (await wallet.summary())["refund_pending_cents"] == 0
    assert (await ledger.check_invariants())["ok"]


async def test_ten_concurrent_refunds_never_refund_more_than_deposited(wallet):
    deposit = await wallet.funded(5_000)
    results = await asyncio.gather(*[wallet.refund(1_000) for _ in range(10)])
    assert sorted(r.status_code for r in results) == [201] * 5 + [409] * 5
    assert all(r.json()["error"] == "insufficient_funds" for r in results if r.status_code == 409)
    refunded = await provider_refunds(deposit["payment_intent_id"])
    assert sum(amount for amount, _ in refunded) == 5_000 and len(refunded) == 5
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["refund_pending_cents"]) == (0, 0)
    assert await lots_by_deposit() == {deposit["deposit_id"]: 0}
    assert (await ledger.check_invariants())["ok"]


async def test_invariant_catches_refund_pending_drift(wallet, monkeypatch):
    async def unreachable(*_, **__):
        raise PaymentProviderError("network") from stripe.APIConnectionError("timeout")

    await wallet.funded(1_000)
    monkeypatch.setattr(payments, "create_refund", unreachable)
    [lot] = (await wallet.refund(1_000)).json()["refunds"]
    assert (await ledger.check_invariants())["ok"]
    await WalletRefund.find_one(WalletRefund.id == PydanticObjectId(lot["refund_id"])).update(
        {"$set": {"status": "succeeded"}})  # a status change without its journal
    checks = {v["check"] for v in (await ledger.check_invariants())["violations"]}
    assert checks == {"refund_pending_equals_pending_refunds"}
    await WalletRefund.find_one(WalletRefund.id == PydanticObjectId(lot["refund_id"])).update(
        {"$set": {"status": "pending"}})
