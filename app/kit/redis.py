"""Shared Redis clients: async for the API, sync for RQ. A dropped connection (a Redis restart) is
retried a few times on a fresh one before an error reaches the caller."""

from functools import lru_cache
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from app.config import get_settings

_async_client: aioredis.Redis | None = None


def _options(retry_class: type, retries: int = 3) -> dict[str, Any]:
    # A dropped connection is retried; a timeout is not: a hung Redis must fail fast, not four times.
    retry = retry_class(ExponentialBackoff(cap=0.5, base=0.05), retries, supported_errors=(RedisConnectionError,))
    return {"socket_connect_timeout": 2, "health_check_interval": 10, "retry": retry}


def get_redis() -> aioredis.Redis:
    global _async_client
    if _async_client is None:
        _async_client = aioredis.from_url(get_settings().redis_url, socket_timeout=2, **_options(AsyncRetry))
    return _async_client


async def close_redis() -> None:
    global _async_client
    if _async_client is not None:
        await _async_client.aclose()
        _async_client = None


@lru_cache
def get_sync_redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url, socket_timeout=5, **_options(Retry))


@lru_cache
def get_hint_redis() -> redis.Redis:
    """For queue hints sent from a request: best effort, so it gives up within about a second
    instead of holding the request while Redis hangs (the outbox sweep re-sends the hint)."""
    return redis.Redis.from_url(get_settings().redis_url, socket_timeout=1,
                                **{**_options(Retry, retries=1), "socket_connect_timeout": 0.5})


async def reset_clients() -> None:
    """Forget both clients (a test pointing the app at another Redis)."""
    await close_redis()
    get_sync_redis.cache_clear()
    get_hint_redis.cache_clear()
