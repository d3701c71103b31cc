"""The moving-window limiter: exact counts across any clock edge, an honest Retry-After, bounded memory."""

import asyncio

import pytest

from app.errors import RateLimited
from app.kit import ratelimit
from app.kit.redis import get_redis


async def test_a_flood_keeps_only_what_can_decide_and_retry_after_is_honest():
    for _ in range(3):
        await ratelimit.enforce("t", "client", 3, window_seconds=2)
    for _ in range(200):  # refused hits count, but only the newest limit + 1 are kept
        with pytest.raises(RateLimited) as refused:
            await ratelimit.enforce("t", "client", 3, window_seconds=2)
    assert await get_redis().zcard("rl:t:client") == 4
    wait = refused.value.retry_after
    assert 1 <= wait <= 3
    await asyncio.sleep(wait)
    await ratelimit.enforce("t", "client", 3, window_seconds=2)  # obeying Retry-After is enough


async def test_other_identities_are_counted_apart():
    for _ in range(2):
        await ratelimit.enforce("t", "a", 2)
    with pytest.raises(RateLimited):
        await ratelimit.enforce("t", "a", 2)
    await ratelimit.enforce("t", "b", 2)
