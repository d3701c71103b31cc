"""Deposits and refunds under real faults: a lost commit answer, a crash after the first money
commit, Redis gone between the inbox insert and the enqueue, a SIGKILLed worker mid-refund."""

import asyncio

from beanie import PydanticObjectId

from app import faults
from app.integrations import payments
from app.kit.idempotency import IdempotencyRecord
from app.kit.queue import queue_depths
from app.ledger import service as ledger
from app.ledger.models import Journal
from app.outbox import service as outbox
from app.outbox.models import OutboxTask
from app.payments.models import InboxEvent
from app.wallet import refunds
from app.wallet.models import Deposit, WalletAllocation, WalletRefund
from tests.fixtures.factories import drain_jobs, post_stripe_event, settle_outbox, stripe_event
from tests.fixtures.faults import eventually, lose_commit_answer_once
from tests.wallet.conftest import intent, pay


async def provider_refunds(intent_id: str) -> list[int]:
    return sorted(r.amount for r in await payments.list_refunds(intent_id))


async def test_unknown_commit_result_on_the_deposit_credit_credits_once(wallet):
    body = (await wallet.deposit(5_000)).json()
    await pay(body["payment_intent_id"])
    key = f"deposit:{body['deposit_id']}"
    lost = lose_commit_answer_once(lambda: Journal.find_one(Journal.key == key))

    await wallet.event("payment_intent.succeeded", body["payment_intent_id"])
    assert lost["count"] == 1  # the credit's commit answer really was lost
    assert await Journal.find(Journal.key == key).count() == 1
    assert await WalletAllocation.count() == 1
    assert (await wallet.summary())["available_cents"] == 5_000
    [event] = await InboxEvent.find_all().to_list()
    assert event.status == "processed"


async def test_unknown_commit_result_on_the_refund_reservation_refunds_once(wallet):
    deposit = await wallet.funded(4_000)
    lost = lose_commit_answer_once(lambda: WalletRefund.find_one())

    resp = await wallet.refund(1_500, key="refund-unknown-commit")
    assert resp.status_code == 201, resp.text
    assert lost["count"] == 1
    assert [r["status"] for r in resp.json()["refunds"]] == ["succeeded"]
    assert await WalletRefund.count() == 1
    assert await Journal.find(Journal.type == "wallet.refund").count() == 1
    assert await provider_refunds(deposit["payment_intent_id"]) == [1_500]
    assert (await wallet.summary())["available_cents"] == 2_500


async def test_a_500_after_the_first_refund_commit_is_resumed_not_repeated(wallet):
    """The reservation committed, then the request died: the same key finishes that refund, and
    neither we nor the provider refund twice."""
    deposit = await wallet.funded(3_000)
    faults.inject("refunds.after_reserve", "raise")
    crashed = await wallet.refund(1_000, key="refund-500")
    assert crashed.status_code == 500
    record = await IdempotencyRecord.find_one({"_id": {"$regex": ":refund-500$"}})
    assert (record.status, record.recovery_point) == ("in_flight", "refund_reserved")
    assert (await wallet.summary())["refund_pending_cents"] == 1_000
    assert await provider_refunds(deposit["payment_intent_id"]) == []

    retried = await wallet.refund(1_000, key="refund-500")
    assert retried.status_code == 201, retried.text
    assert retried.json()["request_id"] == str(record.operation_id)
    assert [r["status"] for r in retried.json()["refunds"]] == ["succeeded"]
    again = await wallet.refund(1_000, key="refund-500")  # now finished: a replay
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json() == retried.json()

    assert await WalletRefund.count() == 1
    assert await provider_refunds(deposit["payment_intent_id"]) == [1_000]
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["refund_pending_cents"]) == (2_000, 0)


async def test_a_crash_after_the_provider_refunded_is_finished_without_a_second_refund(wallet):
    """The provider made the refund, then the process died before recording it: the retry looks
    the refund up at the provider first."""
    deposit = await wallet.funded(3_000)
    faults.inject("refunds.after_provider_call", "raise")
    resp = await wallet.refund(1_200, key="refund-crash")
    assert resp.status_code == 201 and resp.json()["refunds"][0]["status"] == "pending"
    assert await provider_refunds(deposit["payment_intent_id"]) == [1_200]
    assert (await wallet.summary())["refund_pending_cents"] == 1_200

    assert await settle_outbox() == ["done"]
    assert await provider_refunds(deposit["payment_intent_id"]) == [1_200]  # found, not made again
    [refund] = await WalletRefund.find_all().to_list()
    assert refund.status == "succeeded" and refund.provider_refund_id
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["refund_pending_cents"]) == (1_800, 0)


async def test_redis_down_at_the_enqueue_then_a_redelivery_credits_once(client, wallet, private_redis, settings):
    """The event is stored, then Redis dies before its job is enqueued. The provider redelivers
    while Redis is still down. Once Redis is back the sweep sends the job, and the wallet is
    credited exactly once."""
    body = (await wallet.deposit(5_000)).json()
    await pay(body["payment_intent_id"])
    event = stripe_event("payment_intent.succeeded", await intent(body["payment_intent_id"]))
    faults.inject("outbox.before_hint", private_redis.stop)

    first = await post_stripe_event(client, event)
    assert first.status_code == 200  # durably stored: the provider may stop retrying
    redelivered = await post_stripe_event(client, event)
    assert redelivered.status_code == 200
    assert await InboxEvent.count() == 1
    [task] = await OutboxTask.find({"_id": {"$regex": "^inbox:"}}).to_list()
    assert task.status == "pending" and task.attempts == 0

    private_redis.start()  # back, and empty: the hint is gone for good
    assert queue_depths() == {"high": 0, "default": 0, "low": 0}
    assert await drain_jobs() == []
    assert await ledger.balance(f"builder:{wallet.builder['id']}:available") == 0

    settings.outbox_sweep_seconds = 0
    assert await outbox.sweep() >= 1  # the event's task (and the builder's verification mail, long sent)
    await drain_jobs()
    assert (await wallet.summary())["available_cents"] == 5_000
    assert await Journal.find(Journal.key == f"deposit:{body['deposit_id']}").count() == 1
    await post_stripe_event(client, event)  # a late redelivery changes nothing
    await drain_jobs()
    assert (await wallet.summary())["available_cents"] == 5_000
    assert (await ledger.check_invariants())["ok"]


async def test_a_worker_killed_mid_refund_is_finished_once_after_a_restart(wallet, workers, settings):
    """The request dies after reserving; the refund runs on a real worker, which is SIGKILLed
    right after the provider refunded. A new worker and the sweep finish it, once."""
    deposit = await wallet.funded(2_500)
    faults.inject("refunds.after_reserve", "raise")
    assert (await wallet.refund(2_000, key="refund-kill")).status_code == 500
    [refund] = await WalletRefund.find_all().to_list()
    settings.outbox_sweep_seconds = 0

    doomed = workers(FAULTS="refunds.after_provider_call=kill_worker", OUTBOX_LEASE_SECONDS="2")
    assert await outbox.sweep() == 1
    assert await doomed.wait_exit() == -9
    assert await provider_refunds(deposit["payment_intent_id"]) == [2_000]
    task = await OutboxTask.get(refunds.submit_key(refund.id))
    assert (task.status, task.attempts) == ("pending", 1) and task.lease_until is not None
    assert (await WalletRefund.get(refund.id)).status == "pending"

    workers(OUTBOX_LEASE_SECONDS="2")
    await asyncio.sleep(2.2)  # the dead worker's lease runs out
    assert await outbox.sweep() == 1

    async def settled() -> bool:
        return (await WalletRefund.get(refund.id)).status == "succeeded"

    await eventually(settled, what="the refund to settle on the new worker")
    assert await provider_refunds(deposit["payment_intent_id"]) == [2_000]
    assert await Journal.find(Journal.key == f"wallet-refund:{refund.id}:settle").count() == 1
    assert (await OutboxTask.get(task.id)).attempts == 2
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["refund_pending_cents"]) == (500, 0)
    assert (await ledger.check_invariants())["ok"]
    assert await Deposit.count() == 1 and PydanticObjectId(deposit["deposit_id"])


async def test_a_replayed_refund_task_looks_at_the_provider_before_refunding_again(client, actors, wallet, settings,
                                                                                  monkeypatch):
    """The provider took the refund but kept it pending until its task was dead-lettered; days later
    it reports the refund done and the task is revived with fresh attempts. That run looks the
    refund up instead of making a second one, and reconciliation would flag a second one anyway."""
    from app.reconciliation import service as reconciliation
    from tests.fixtures.factories import clear_localstripe

    await clear_localstripe()
    settings.outbox_max_attempts = 2
    deposit = await wallet.funded(3_000)
    real = payments.create_refund

    def pending(call):
        async def shown_pending(*args, **kwargs):
            found = await call(*args, **kwargs)
            for refund in found if isinstance(found, list) else [found]:
                refund["status"] = "pending"
            return found
        return shown_pending

    with monkeypatch.context() as patched:  # the provider keeps the refund pending
        for name in ("create_refund", "retrieve_refund", "list_refunds"):
            patched.setattr(payments, name, pending(getattr(payments, name)))
        [lot] = (await wallet.refund(1_000)).json()["refunds"]
        assert lot["status"] == "pending"
        assert await settle_outbox() == ["dead"]  # still pending at the provider: out of tries

    await refunds.nudge(lot["refund_id"])  # what charge.refund.updated does
    assert await settle_outbox() == ["done"]
    assert await provider_refunds(deposit["payment_intent_id"]) == [1_000]  # found, not made again
    assert (await WalletRefund.get(PydanticObjectId(lot["refund_id"]))).status == "succeeded"

    # Had a second one been made, reconciliation would say so.
    await real(deposit["payment_intent_id"], 1_000, {"wallet_refund_id": lot["refund_id"]}, "dup")
    report = await reconciliation.reconcile()
    assert [(m["id"], m["issue"]) for m in report.mismatches if m["kind"] == "refund"] == [
        (lot["refund_id"], "duplicate_provider_refund")]
