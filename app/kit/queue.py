"""The three RQ queues, the one way to put work on them, and what a task needs around it.

A queue message is only a hint: anything that must happen after a commit is also written to
MongoDB (see app/outbox), so a lost or failed enqueue only delays work.
"""

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from rq import Queue

from app import db
from app.config import get_settings
from app.kit.redis import close_redis, get_hint_redis, get_sync_redis

HIGH, DEFAULT, LOW = "high", "default", "low"
QUEUE_NAMES = (HIGH, DEFAULT, LOW)
_WAITING = ("scheduled", "deferred")


def get_queue(name: str, *, hint: bool = False) -> Queue:
    """The queue `name`; `hint=True` uses a connection that fails fast (see get_hint_redis)."""
    if name not in QUEUE_NAMES:
        raise ValueError(f"unknown queue {name!r}")
    return Queue(name, connection=get_hint_redis() if hint else get_sync_redis())


def enqueue(queue: str, func: str, *args: Any, job_id: str | None = None, hint: bool = False, **kwargs: Any):
    """Enqueue `func` (a dotted path). A deterministic job_id makes a repeat a no-op while the first
    is still waiting in its queue; once it has started (or a worker took it and died), a repeat
    enqueues it again, which is harmless because every task re-reads its state first. There are no
    RQ-level retries: the outbox retries durable work, and a sweep simply runs again."""
    q = get_queue(queue, hint=hint)
    if job_id is not None:
        job_id = safe_job_id(job_id)
        existing = q.fetch_job(job_id)
        if existing is not None and _still_waiting(q, existing):
            return existing
    return q.enqueue(
        func,
        *args,
        job_id=job_id,
        result_ttl=600,
        failure_ttl=7 * 24 * 3600,
        **kwargs,
    )


def _still_waiting(q: Queue, job: Any) -> bool:
    status = job.get_status(refresh=True)
    if status == "queued":  # and really in the list: a worker that died mid-dequeue leaves it "queued"
        return q.connection.lpos(q.key, job.id) is not None
    return status in _WAITING


def safe_job_id(raw: str) -> str:
    """RQ accepts only [A-Za-z0-9_-] in job ids; our ids read like "payout:<id>"."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)


async def enqueue_async(queue: str, func: str, *args: Any, **kwargs: Any):
    """The sync Redis client must not block the event loop."""
    return await asyncio.to_thread(enqueue, queue, func, *args, **kwargs)


def queue_depths() -> dict[str, int]:
    return {name: get_queue(name).count for name in QUEUE_NAMES}


@asynccontextmanager
async def task_context() -> AsyncIterator[None]:
    """A task's own database client: RQ runs each async job in a fresh event loop."""
    if db.is_connected_here():  # already inside an app loop (tests run jobs inline)
        yield
        return
    from app.kit.logging import setup_logging

    settings = get_settings()
    setup_logging(settings.log_level)
    await db.connect(settings, create_indexes=False)
    try:
        yield
    finally:
        await db.disconnect()
        await close_redis()
