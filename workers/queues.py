"""The three RQ queues and the one way to put work on them."""

import asyncio
import re
from typing import Any

from rq import Queue, Retry

from app.kit.redis import get_sync_redis

HIGH, DEFAULT, LOW = "high", "default", "low"
QUEUE_NAMES = (HIGH, DEFAULT, LOW)


def get_queue(name: str) -> Queue:
    if name not in QUEUE_NAMES:
        raise ValueError(f"unknown queue {name!r}")
    return Queue(name, connection=get_sync_redis())


def enqueue(queue: str, func: str, *args: Any, job_id: str | None = None, retries: int = 3, **kwargs: Any):
    """Enqueue `func` (a dotted path) with retries; a deterministic job_id makes repeats no-ops."""
    q = get_queue(queue)
    if job_id is not None:
        job_id = safe_job_id(job_id)
        existing = q.fetch_job(job_id)
        if existing is not None and existing.get_status(refresh=True) in ("queued", "started", "scheduled", "deferred"):
            return existing
    return q.enqueue(
        func,
        *args,
        job_id=job_id,
        retry=Retry(max=retries, interval=[5, 30, 120][:retries]) if retries else None,
        result_ttl=3600,
        failure_ttl=7 * 24 * 3600,
        **kwargs,
    )


def safe_job_id(raw: str) -> str:
    """RQ accepts only [A-Za-z0-9_-] in job ids; our ids read like "payout:<id>"."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)


async def enqueue_async(queue: str, func: str, *args: Any, **kwargs: Any):
    """The sync Redis client must not block the event loop."""
    return await asyncio.to_thread(enqueue, queue, func, *args, **kwargs)


def queue_depths() -> dict[str, int]:
    return {name: get_queue(name).count for name in QUEUE_NAMES}
