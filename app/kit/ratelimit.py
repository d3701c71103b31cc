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
    pipe.zcard(key)
    pipe.zrange(key, 0, 0, withscores=True)
    pipe.expire(key, window_seconds + 1)
    _, _, count, oldest, _ = await pipe.execute()
    if count > limit:
        retry_after = int(oldest[0][1] + window_seconds - now) + 1 if oldest else window_seconds
        raise RateLimited(retry_after, f"Rate limit of {limit} per {window_seconds}s exceeded; retry later.")
