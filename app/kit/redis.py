"""Shared Redis clients: async for the API, sync for RQ."""

from functools import lru_cache

import redis
import redis.asyncio as aioredis

from app.config import get_settings

_async_client: aioredis.Redis | None = None


def get_redis() -> aioredis.Redis:
    global _async_client
    if _async_client is None:
        _async_client = aioredis.from_url(get_settings().redis_url, socket_timeout=2, socket_connect_timeout=2)
    return _async_client


async def close_redis() -> None:
    global _async_client
    if _async_client is not None:
        await _async_client.aclose()
        _async_client = None


@lru_cache
def get_sync_redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url, socket_timeout=5, socket_connect_timeout=2)


async def reset_clients() -> None:
    """Forget both clients (a test pointing the app at another Redis)."""
    await close_redis()
    get_sync_redis.cache_clear()
