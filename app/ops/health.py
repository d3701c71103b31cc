"""The stack's health, probed in the background so that GET /health costs no I/O.

Every HEALTH_PROBE_SECONDS the API process checks MongoDB (ping), Redis (a write with a TTL, so
refused writes count as down), the registered RQ workers, and the outbox (tasks overdue, tasks
dead-lettered). /health answers 200 while the process lives, with "status": "ok" or "degraded" and
the names of the problems; the figures go to /metrics (which a token can protect), not to the
public endpoint. /health/db and /health/redis answer 503 when their dependency is down.
"""

import asyncio
import logging
from typing import Any

from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from app import db
from app.config import get_settings
from app.kit.redis import get_redis
from app.kit.timeutil import utcnow
from app.ops.metrics import DEPENDENCY_UP, OUTBOX_TASKS, RQ_WORKERS

log = logging.getLogger(__name__)
_snapshot: dict[str, Any] = {"status": "ok"}


def snapshot() -> dict[str, Any]:
    return {"status": _snapshot.get("status", "ok"), "problems": _snapshot.get("problems", [])}


async def redis_writable(timeout: float = 2.0) -> bool:
    try:
        return bool(await asyncio.wait_for(get_redis().set("health:probe", "1", ex=10), timeout))
    except (RedisError, OSError, TimeoutError):
        return False


async def probe() -> dict[str, Any]:
    mongo, redis = await asyncio.gather(db.ping(), redis_writable())
    checks: dict[str, Any] = {"mongodb": "ok" if mongo else "down", "redis": "ok" if redis else "down"}
    if redis:
        checks["workers"] = await _workers()
    if mongo:
        checks["outbox"] = await _outbox()
    problems = [name for name in ("mongodb", "redis") if checks[name] != "ok"]
    if (checks.get("outbox") or {}).get("overdue"):
        problems.append("outbox_backlog")
    _snapshot.clear()
    _snapshot.update(status="degraded" if problems else "ok", problems=problems, checks=checks,
                     checked_at=utcnow().isoformat())
    _export(checks)
    return _snapshot


def _export(checks: dict[str, Any]) -> None:
    for name in ("mongodb", "redis"):
        DEPENDENCY_UP.labels(name).set(1 if checks[name] == "ok" else 0)
    if checks.get("workers") is not None:
        RQ_WORKERS.set(checks["workers"])
    for state, count in (checks.get("outbox") or {}).items():
        OUTBOX_TASKS.labels(state).set(count)


async def _workers() -> int | None:
    try:
        return int(await get_redis().scard("rq:workers"))
    except (RedisError, OSError):
        return None


async def _outbox() -> dict[str, int] | None:
    from app.outbox import service as outbox

    try:
        return await asyncio.wait_for(outbox.counts(), 5)
    except (PyMongoError, TimeoutError):
        return None


async def run_forever() -> None:
    interval = get_settings().health_probe_seconds
    while True:
        try:
            before = _snapshot.get("status")
            now = await probe()
            if now["status"] != before:
                log.warning("health: %s %s", now["status"], now.get("problems") or "")
        except Exception:  # the monitor must outlive any single failed probe
            log.exception("health probe failed")
        await asyncio.sleep(interval)
