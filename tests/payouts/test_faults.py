"""Payouts under real faults: a lost commit answer on the reservation, and a worker SIGKILLed right
after the provider made the transfer."""

import asyncio

from beanie import PydanticObjectId

from app.ledger import service as ledger
from app.ledger.models import Journal
from app.outbox import service as outbox
from app.outbox.models import OutboxTask
from app.payouts.models import Payout
from tests.fixtures.factories import drain_jobs
from tests.fixtures.faults import eventually, lose_commit_answer_once
from tests.payouts.conftest import PayoutDriver


async def test_unknown_commit_result_on_the_reservation_reserves_once(payee: PayoutDriver):
    lost = lose_commit_answer_once(lambda: Payout.find_one())
    resp = await payee.request(2_000, key="payout-unknown-commit")
    assert resp.status_code == 201, resp.text
    assert lost["count"] == 1
    assert await Payout.count() == 1
    assert await Journal.find(Journal.type == "payout.reserve").count() == 1
    assert await payee.balance() == {"available_cents": 3_000, "pending_cents": 2_000}
    await drain_jobs()
    assert await payee.balance() == {"available_cents": 3_000, "pending_cents": 0}
    assert await Journal.find(Journal.type == "payout.paid").count() == 1


async def test_unknown_commit_result_on_the_transfer_settlement_pays_once(payee: PayoutDriver):
    payout_id = (await payee.request(1_500)).json()["id"]
    lost = lose_commit_answer_once(lambda: Journal.find_one(Journal.key == f"payout:{payout_id}:resolve"))
    await drain_jobs()
    assert lost["count"] == 1
    assert await Journal.find(Journal.key == f"payout:{payout_id}:resolve").count() == 1
    assert (await OutboxTask.get(f"payout:{payout_id}:transfer")).status == "done"
    assert await payee.balance() == {"available_cents": 3_500, "pending_cents": 0}


async def test_a_worker_killed_mid_transfer_is_finished_once_after_a_restart(payee: PayoutDriver, workers, settings):
    payout_id = (await payee.request(2_500)).json()["id"]  # its hint waits in Redis for a worker
    doomed = workers(FAULTS="payouts.transfer.after_provider_call=kill_worker", OUTBOX_LEASE_SECONDS="2",
                     STRIPE_SIMULATE_CONNECT="true")
    assert await doomed.wait_exit() == -9  # SIGKILLed between the provider's transfer and our record
    payout = await Payout.get(PydanticObjectId(payout_id))
    task = await OutboxTask.get(f"payout:{payout_id}:transfer")
    assert payout.status == "pending" and (task.status, task.attempts) == ("pending", 1)
    assert await payee.balance() == {"available_cents": 2_500, "pending_cents": 2_500}

    workers(OUTBOX_LEASE_SECONDS="2", STRIPE_SIMULATE_CONNECT="true")
    settings.outbox_sweep_seconds = 0
    await asyncio.sleep(2.2)  # the dead worker's lease runs out
    assert await outbox.sweep() == 1

    async def paid() -> bool:
        return (await Payout.get(PydanticObjectId(payout_id))).status == "paid"

    await eventually(paid, what="the payout to be paid by the new worker")
    assert await Journal.find(Journal.key == f"payout:{payout_id}:resolve").count() == 1
    assert (await Payout.get(PydanticObjectId(payout_id))).transfer_id.startswith("tr_sim_")
    assert await payee.balance() == {"available_cents": 2_500, "pending_cents": 0}
    assert (await OutboxTask.get(task.id)).attempts == 2
    assert (await ledger.check_invariants())["ok"]
