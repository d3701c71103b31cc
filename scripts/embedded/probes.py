"""Loopback ports for the services, and the checks that tell when a service is ready."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable

_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never the same one twice in this run."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_from_env(var: str, default: int | None = None) -> int:
    """Port from $var (0 means any free port), else `default` if it is free, else any free port.

    The port is picked here, before the child starts, so its ready check and the URLs the stack
    prints and writes to the run directory's env file name the real port.
    """
    value = os.environ.get(var, "").strip()
    if value:
        try:
            port = int(value)
        except ValueError:
            raise SystemExit(f"{var}={value!r} is not a port number (0 means any free port)") from None
        if not 0 <= port <= 65535:
            raise SystemExit(f"{var}={value!r} is not a port number (0 means any free port)")
        return port if port else free_port()
    if default is not None and port_is_free(default):
        return default
    return free_port()


def tcp_ready(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    return check


def redis_ready(address: tuple[str, int] | str) -> Callable[[], bool]:
    """PING over TCP (host, port) or a unix socket path."""

    def check() -> bool:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(address)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    return check


def http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    return check


# -- RQ processes: ready once they have registered with Redis ------------------------------------
# A running process proves little: a worker can sit in its Redis back-off loop, or die a second
# after its start. These checks look in Redis for what the process itself writes there.

def _redis_client(url: str):  # -> redis.Redis, imported lazily (the venv has redis-py)
    import redis

    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)


def rq_worker_ready(redis_url: str, pid: Callable[[], int | None]) -> Callable[[], bool]:
    """True once an RQ worker running as `pid` on this host has registered its birth: RQ adds its
    key to the `rq:workers` set and writes `rq:worker:<name>` with its pid and hostname (and a
    `death` field when it stops)."""
    client = None
    host = socket.gethostname()

    def check() -> bool:
        nonlocal client
        want = pid()
        if not want:
            return False
        try:
            client = client or _redis_client(redis_url)
            for key in client.smembers("rq:workers"):
                fields = client.hmget(key, "pid", "hostname", "death")
                if fields[0] == str(want) and fields[1] == host and not fields[2]:
                    return True
        except Exception:  # noqa: BLE001 - any Redis or connection error: not ready yet
            client = None
        return False

    return check


SCHEDULED_JOBS_KEY = "rq:scheduler:scheduled_jobs"  # rq_scheduler.Scheduler.scheduled_jobs_key
PERIODIC_PREFIX = "periodic-"  # workers.scheduler.periodic_job_id


def rq_scheduler_ready(redis_url: str, started_at: Callable[[], float]) -> Callable[[], bool]:
    """True once the scheduler started at `started_at` (wall clock) has registered its periodic
    jobs: workers/scheduler.py (re)creates every `periodic-*` job in rq-scheduler's
    `rq:scheduler:scheduled_jobs` when it starts, so there is at least one and each job hash
    (`rq:job:<id>`) was created after this process started (none is left from a previous one)."""
    client = None

    def check() -> bool:
        nonlocal client
        since = started_at()
        try:
            client = client or _redis_client(redis_url)
            ids = [i for i in client.zrange(SCHEDULED_JOBS_KEY, 0, -1) if i.startswith(PERIODIC_PREFIX)]
            if not ids:
                return False
            for job_id in ids:
                created = client.hget(f"rq:job:{job_id}", "created_at")
                if not created or _utc_timestamp(created) < since:
                    return False
            return True
        except Exception:  # noqa: BLE001 - any Redis or connection error: not ready yet
            client = None
            return False

    return check


def _utc_timestamp(text: str) -> float:
    """RQ's utcformat ('2026-11-23T10:00:00.123456Z') as a POSIX timestamp."""
    from datetime import UTC, datetime

    text = text.rstrip("Z")
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in text else "%Y-%m-%dT%H:%M:%S"
    return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
