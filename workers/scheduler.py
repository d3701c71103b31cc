"""python -m workers.scheduler: registers the periodic sweeps, then runs rq-scheduler.

Each sweep finds due items and enqueues one job per item with a deterministic id, so a missed
tick only delays work and a repeated tick does nothing.
"""

import logging

from rq_scheduler import Scheduler

from app.config import get_settings
from app.kit.logging import setup_logging
from app.kit.redis import get_sync_redis
from workers.queues import HIGH, LOW, safe_job_id

# (cron, task path, queue): later issues add auto-release, escalation, webhook retries...
PERIODIC: list[tuple[str, str, str]] = [
    ("*/10 * * * *", "app.payouts.tasks.retry_stuck", HIGH),
    ("17 3 * * *", "app.ledger.tasks.reconcile", LOW),
    ("*/5 * * * *", "app.wallet.tasks.retry_stale_refunds", HIGH),
]


def cron_job_id(func: str) -> str:
    return safe_job_id(f"cron-{func}")


def register(scheduler: Scheduler) -> None:
    wanted = {cron_job_id(func) for _, func, _ in PERIODIC}
    for job in scheduler.get_jobs():
        if job.id.startswith("cron-") and job.id not in wanted:
            scheduler.cancel(job)
    for cron, func, queue in PERIODIC:
        job_id = cron_job_id(func)
        if job_id in scheduler:
            scheduler.cancel(job_id)
        scheduler.cron(cron, func=func, id=job_id, queue_name=queue, result_ttl=3600, use_local_timezone=False)


def main() -> None:
    settings = get_settings()
    setup_logging(settings.log_level)
    scheduler = Scheduler(connection=get_sync_redis(), interval=30)
    register(scheduler)
    logging.getLogger(__name__).info("scheduler started with %d periodic jobs", len(PERIODIC))
    scheduler.run()


if __name__ == "__main__":
    main()

__all__ = ["HIGH", "LOW", "PERIODIC", "register"]
