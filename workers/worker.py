"""python -m workers.worker [--burst] [--queues high,default]: one RQ worker on the given queues
(default: high, default and low, in that priority). --burst drains the queues and exits. The stack
runs two: money and mail (high, default), and the slow periodic work (low), so an hour-long
reconciliation never holds up a deposit.

It rides out Redis faults. RQ's own work loop quits on any Redis error it does not expect (a
refused write while a job starts, a restart): this entry point then waits for a job still running
in its work horse, probes Redis with a write (backing off while it still fails) and starts a fresh
worker as soon as Redis takes writes again. Only a requested stop (SIGTERM, SIGINT) ends the
process. Every job is an outbox task or a sweep that
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
from app.kit import error_reporting
from app.kit.logging import setup_logging
from app.kit.queue import QUEUE_NAMES
from app.kit.redis import get_sync_redis

log = logging.getLogger("workers.worker")
PROBE_START, PROBE_MAX = 0.2, 10.0


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
    args = sys.argv[1:] if argv is None else argv
    burst = "--burst" in args
    queues = _queues(args)
    settings = get_settings()
    setup_logging(settings.log_level)
    error_reporting.init(settings)
    registry.load()  # every task module, imported once before work horses fork
    log.info("worker starting on queues %s", ",".join(queues))
    while True:
        worker = None
        try:
            worker = ResilientWorker(queues, connection=get_sync_redis(), job_monitoring_interval=5)
            worker.work(burst=burst, with_scheduler=False, logging_level=settings.log_level)
        except (RedisError, OSError) as exc:
            log.warning("worker could not reach Redis: %s", exc)
        except StopRequested:
            return
        if burst or (worker is not None and worker.stop_asked):
            return
        _wait_for_horse(worker)
        log.warning("worker loop ended on a Redis fault; starting a fresh worker once Redis takes writes")
        if not _wait_for_redis():
            return


def _queues(args: list[str]) -> list[str]:
    if "--queues" not in args:
        return list(QUEUE_NAMES)
    wanted = args[args.index("--queues") + 1].split(",") if args.index("--queues") + 1 < len(args) else []
    if not wanted or any(name not in QUEUE_NAMES for name in wanted):
        raise SystemExit(f"--queues takes a comma-separated list of {', '.join(QUEUE_NAMES)}")
    return sorted(wanted, key=QUEUE_NAMES.index)


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


def _wait_for_redis() -> bool:
    """Probe Redis with a write, backing off while it fails; False when a stop was asked meanwhile."""
    stopped: list[int] = []
    previous = {sig: signal.signal(sig, lambda *_: stopped.append(1)) for sig in (signal.SIGTERM, signal.SIGINT)}
    delay, waited = PROBE_START, 0.0
    try:
        while not stopped:
            try:
                get_sync_redis().set("health:worker-probe", "1", ex=10)
                if waited:
                    log.info("Redis takes writes again after %.1fs; starting a fresh worker", waited)
                return True
            except (RedisError, OSError):
                pass
            end = time.monotonic() + delay
            while not stopped and time.monotonic() < end:
                time.sleep(0.05)
            waited += delay
            delay = min(delay * 2, PROBE_MAX)
        return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    main()
