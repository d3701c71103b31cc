"""The real worker process rides out a Redis write outage while it is starting jobs: it backs off,
starts a fresh RQ worker once Redis takes writes again, and every job still runs exactly once."""

import asyncio

from app.outbox import service as outbox
from app.outbox.models import OutboxTask
from tests.fixtures.factories import outbox as mails
from tests.fixtures.faults import eventually


async def test_a_redis_write_outage_during_job_starts_leaves_the_worker_alive(actors, private_redis, workers,
                                                                             settings):
    settings.outbox_sweep_seconds = 0
    users = [await actors.register("tester") for _ in range(12)]  # one verification mail each, hinted
    worker = workers()

    async def started_working() -> bool:
        return await OutboxTask.find(OutboxTask.status == "done").count() >= 1

    await eventually(started_working, what="the worker to send a first mail")
    private_redis.refuse_writes()  # every job start, heartbeat and dequeue now fails with OOM
    await asyncio.sleep(2)
    assert worker.alive(), worker.log()[-3000:]
    private_redis.accept_writes()

    async def all_sent() -> bool:
        await outbox.sweep()  # hints of jobs the outage swallowed are sent again
        return await OutboxTask.find(OutboxTask.status == "pending").count() == 0

    await eventually(all_sent, timeout=45, what="every mail to be sent after the outage")
    assert worker.alive(), worker.log()[-3000:]
    log = worker.log()
    assert "starting a fresh worker" in log or "could not reach Redis" in log, log[-3000:]
    for user in users:
        assert len(mails(user["email"])) == 1, user["email"]  # each exactly once
    await worker.stop()
    assert worker.proc.returncode == 0  # a requested stop is still a clean one
