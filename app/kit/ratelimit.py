"""Fixed-window rate limits in Redis: one round trip per check."""

import time

from app.errors import RateLimited
from app.kit.redis import get_redis


async def enforce(scope: str, identity: str, limit: int, window_seconds: int = 60) -> None:
    """Count one hit for identity in scope; raise RateLimited with Retry-After when over `limit`."""
    window = int(time.time() // window_seconds)
    key = f"rl:{scope}:{identity}:{window}"
    pipe = get_redis().pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, window_seconds + 1)
    count, _ = await pipe.execute()
    if count > limit:
        retry_after = window_seconds - int(time.time() % window_seconds)
        raise RateLimited(retry_after, f"Rate limit of {limit} per {window_seconds}s exceeded; retry later.")
