"""Health, readiness and Prometheus metrics (outside /api)."""

import secrets

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from app import db
from app.config import get_settings
from app.errors import Unauthorized
from app.kit.queue import QUEUE_NAMES
from app.kit.redis import get_redis
from app.ops import health as monitor
from app.ops.metrics import QUEUE_DEPTH, render
from app.ops.schemas import Health, ServiceStatus

router = APIRouter(tags=["operations"])
_PROBE = {200: {"model": ServiceStatus, "description": "The dependency answers."},
          503: {"model": ServiceStatus, "description": "The dependency is down."}}


@router.get("/health", responses={200: {"model": Health}})
async def health() -> dict:
    """Liveness, always 200: `status` is "ok", or "degraded" with the names of the problems
    (mongodb, redis, outbox_backlog). It does no I/O itself; the figures are in /metrics."""
    return monitor.snapshot()


@router.get("/health/db", responses=_PROBE)
async def health_db() -> JSONResponse:
    ok = await db.ping()
    return JSONResponse({"status": "ok" if ok else "down", "service": "mongodb"}, 200 if ok else 503)


@router.get("/health/redis", responses=_PROBE)
async def health_redis() -> JSONResponse:
    ok = await _redis_ok()
    return JSONResponse({"status": "ok" if ok else "down", "service": "redis"}, 200 if ok else 503)


async def _redis_ok() -> bool:
    """A write, not a ping: a Redis that refuses writes cannot take jobs."""
    return await monitor.redis_writable()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    token = get_settings().metrics_token
    sent = request.headers.get("authorization", "").encode("latin-1", "replace")  # bytes: any header compares
    if token and not secrets.compare_digest(sent, f"Bearer {token}".encode()):
        raise Unauthorized("metrics token required")
    await _refresh_queue_depths()
    body, content_type = render()
    return Response(body, media_type=content_type)


async def _refresh_queue_depths() -> None:
    try:
        pipe = get_redis().pipeline(transaction=False)
        for name in QUEUE_NAMES:
            pipe.llen(f"rq:queue:{name}")
        for name, depth in zip(QUEUE_NAMES, await pipe.execute(), strict=True):
            QUEUE_DEPTH.labels(name).set(depth)
    except (RedisError, OSError):
        pass  # a scrape during a Redis outage still returns the HTTP metrics
