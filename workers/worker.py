"""python -m workers.worker [--burst]: one RQ worker on the high, default and low queues (in that
priority). --burst drains the queues and exits.

It rides out Redis faults. RQ's own work loop quits on any Redis error it does not expect (a
refused write while a job starts, a restart): this entry point then waits for a job still running
in its work horse, backs off and starts a fresh worker, until Redis answers again. Only a
requested stop (SIGTERM, SIGINT) ends the process. Every job is an outbox task or a sweep that
re-reads its state, so a job interrupted by the fault runs again harmlessly.
"""

import logging
import os
import signal
import sys
import time

from redis.exceptions import RedisError
from rq import Worker
from rq.exceptions import StopRequested

from app import registry
from app.config import get_settings
from app.kit.logging import setup_logging
from app.kit.queue import QUEUE_NAMES
from app.kit.redis import get_sync_redis

log = logging.getLogger("workers.worker")
BACKOFF_START, BACKOFF_MAX = 0.5, 30.0


class ResilientWorker(Worker):
    """Remembers a requested stop, so the loop below can tell it from a Redis failure."""

    stop_asked = False

    def request_stop(self, signum, frame):
        self.stop_asked = True
        try:
            super().request_stop(signum, frame)
        except RedisError:  # RQ asks Redis whether a job is running; stop anyway
            raise StopRequested() from None


def main(argv: list[str] | None = None) -> None:
    burst = "--burst" in (sys.argv[1:] if argv is None else argv)
    settings = get_settings()
    setup_logging(settings.log_level)
    if settings.sentry_dsn:
        import sentry_sdk

        sentry_sdk.init(dsn=settings.sentry_dsn, environment=settings.environment)
    registry.load()  # every task module, imported once before work horses fork
    log.info("worker starting on queues %s", ",".join(QUEUE_NAMES))
    delay = BACKOFF_START
    while True:
        worker, started = None, time.monotonic()
        try:
            worker = ResilientWorker(list(QUEUE_NAMES), connection=get_sync_redis(), job_monitoring_interval=5)
            worker.work(burst=burst, with_scheduler=False, logging_level=settings.log_level)
        except (RedisError, OSError) as exc:
            log.warning("worker could not reach Redis: %s", exc)
        except StopRequested:
            return
        if burst or (worker is not None and worker.stop_asked):
            return
        _wait_for_horse(worker)
        if time.monotonic() - started > 60:
            delay = BACKOFF_START
        log.warning("worker loop ended on a Redis fault; starting a fresh worker in %.1fs", delay)
        if _sleep_unless_stopped(delay):
            return
        delay = min(delay * 2, BACKOFF_MAX)


def _wait_for_horse(worker: Worker | None) -> None:
    """A job still running in its work horse finishes before a new worker starts."""
    pid = getattr(worker, "_horse_pid", 0) if worker is not None else 0
    while pid:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.2)


def _sleep_unless_stopped(seconds: float) -> bool:
    """Sleep, returning True early when SIGTERM or SIGINT arrives."""
    stopped = []
    previous = {sig: signal.signal(sig, lambda *_: stopped.append(1)) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        end = time.monotonic() + seconds
        while not stopped and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return bool(stopped)


if __name__ == "__main__":
    main()
