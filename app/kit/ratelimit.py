"""Moving-window rate limits in Redis (a sorted set of hit times per identity): one round trip per
check, and no window edge where a client gets twice its limit or a count starts over."""

import time
import uuid

from app.errors import RateLimited
from app.kit.redis import get_redis


async def enforce(scope: str, identity: str, limit: int, window_seconds: int = 60) -> None:
    """Count one hit for identity in scope; raise RateLimited with Retry-After when more than `limit`
    hits fall within the last `window_seconds`. Refused hits count too, so hammering does not help."""
    now = time.time()
    key = f"rl:{scope}:{identity}"
    pipe = get_redis().pipeline(transaction=True)
    pipe.zremrangebyscore(key, 0, now - window_seconds)
    pipe.zadd(key, {f"{now:.6f}:{uuid.uuid4().hex[:8]}": now})
    # Only the newest limit + 1 hits can decide anything: older ones go, so a flood stays small.
    pipe.zremrangebyrank(key, 0, -(limit + 2))
    pipe.zcard(key)
    # A hit is admitted once fewer than `limit` others are in the window: when the limit-th newest leaves.
    pipe.zrange(key, -limit, -limit, withscores=True)
    pipe.expire(key, window_seconds + 1)
    _, _, _, count, blocking, _ = await pipe.execute()
    if count > limit:
        retry_after = int(blocking[0][1] + window_seconds - now) + 1 if blocking else window_seconds
        raise RateLimited(retry_after, f"Rate limit of {limit} per {window_seconds}s exceeded; retry later.")
