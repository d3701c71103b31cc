"""python -m workers.scheduler: schedules every periodic task registered with app.kit.periodic and
hands each one to a worker when it is due.

It rides out Redis faults: an error is logged and retried with backoff, never fatal, and after
Redis comes back (even empty, after a restart) the periodic jobs are registered again. Each
periodic task is a sweep that hands out one job per due item with a deterministic id, so a missed
tick only delays work and a repeated one does nothing.
"""

import logging
import signal
import time
import warnings
from datetime import UTC, datetime

from redis.exceptions import RedisError
from rq_scheduler import Scheduler

from app import registry
from app.config import get_settings
from app.kit import periodic
from app.kit.logging import setup_logging
from app.kit.queue import safe_job_id
from app.kit.redis import get_sync_redis

log = logging.getLogger("workers.scheduler")
BACKOFF_START, BACKOFF_MAX = 0.5, 30.0
RESULT_TTL = 600


def periodic_job_id(func: str) -> str:
    return safe_job_id(f"periodic-{func}")


def register(scheduler: Scheduler) -> None:
    """(Re)create every periodic job, and drop ours that are no longer registered."""
    wanted = {periodic_job_id(p.func) for p in periodic.registered()}
    for job in scheduler.get_jobs():
        if job.id.startswith(("periodic-", "cron-")) and job.id not in wanted:
            scheduler.cancel(job)
    for task in periodic.registered():
        _schedule(scheduler, task)


def ensure_registered(scheduler: Scheduler) -> None:
    """Put back any periodic job Redis lost (a restart wipes it)."""
    for task in periodic.registered():
        if periodic_job_id(task.func) not in scheduler:
            log.warning("periodic job %s was missing (Redis restarted?); registering it again", task.func)
            _schedule(scheduler, task)


def _schedule(scheduler: Scheduler, task: periodic.Periodic) -> None:
    job_id = periodic_job_id(task.func)
    if job_id in scheduler:
        scheduler.cancel(job_id)
    if task.cron:
        scheduler.cron(task.cron, func=task.func, id=job_id, queue_name=task.queue, result_ttl=RESULT_TTL,
                       use_local_timezone=False, timeout=task.timeout)
    else:
        scheduler.schedule(datetime.now(UTC).replace(tzinfo=None), task.func, interval=task.interval_seconds(),
                           repeat=None, id=job_id, queue_name=task.queue, result_ttl=RESULT_TTL, timeout=task.timeout)


def poll_seconds() -> float:
    """Half the shortest interval (at least 1 s, at most 30 s), so a sweep runs close to its period."""
    intervals = [p.interval_seconds() for p in periodic.registered() if p.every]
    return max(1.0, min([30.0, *(i / 2 for i in intervals)]))


def main() -> None:
    # rq-scheduler and crontab still call datetime.utcnow(); their warnings are noise here.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="rq_scheduler")
    warnings.filterwarnings("ignore", category=FutureWarning, module="rq_scheduler")
    settings = get_settings()
    setup_logging(settings.log_level)
    registry.load()
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    poll = poll_seconds()
    log.info("scheduler started: %d periodic jobs, polling every %.1fs", len(periodic.registered()), poll)
    scheduler, delay = None, BACKOFF_START
    while not stopping:
        try:
            if scheduler is None:
                scheduler = Scheduler(connection=get_sync_redis(), interval=poll)
                register(scheduler)
            ensure_registered(scheduler)
            if scheduler.acquire_lock():
                try:
                    scheduler.enqueue_jobs()
                finally:
                    scheduler.remove_lock()
            delay = BACKOFF_START
            wait = poll
        except RedisError as exc:
            log.warning("scheduler: Redis unavailable (%s); retrying in %.1fs", exc, delay)
            wait, delay = delay, min(delay * 2, BACKOFF_MAX)
        _sleep(wait, stopping)
    log.info("scheduler stopped")


def _sleep(seconds: float, stopping: list[int]) -> None:
    end = time.monotonic() + seconds
    while not stopping and time.monotonic() < end:
        time.sleep(0.1)


if __name__ == "__main__":
    main()
