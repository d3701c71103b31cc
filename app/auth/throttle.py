"""Limits on the auth routes strangers can call: per client IP and per target address, and the
per-account login backoff. Addresses are keyed by a hash, so Redis holds no email addresses."""

import hashlib

from app.config import get_settings
from app.errors import LoginThrottled
from app.kit import ratelimit
from app.kit.redis import get_redis

HOUR = 3600


def _address_key(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


async def mail_route(ip: str, email: str) -> None:
    """Any route that sends mail to `email`, together: per IP (one client spraying addresses) and per
    address (many clients flooding one inbox). Counted whether or not the account exists."""
    settings = get_settings()
    await ratelimit.enforce("mail:ip", ip, settings.email_rate_per_ip_per_hour, HOUR)
    await ratelimit.enforce("mail:to", _address_key(email), settings.email_rate_per_address_per_hour, HOUR)


async def check_login(email: str) -> None:
    """Refuse while the account's backoff runs; no password is checked (or hashed) meanwhile."""
    remaining = await get_redis().ttl(f"login-lock:{_address_key(email)}")
    if remaining > 0:
        raise LoginThrottled(remaining)


async def login_failed(email: str) -> None:
    """After LOGIN_FAILURES_BEFORE_BACKOFF failures in a row, each failure locks the account's logins for
    2 s, 4 s, 8 s … up to LOGIN_BACKOFF_MAX_SECONDS. Keyed by address, so unknown accounts behave alike."""
    settings = get_settings()
    key = _address_key(email)
    pipe = get_redis().pipeline(transaction=True)
    pipe.incr(f"login-fail:{key}")
    pipe.expire(f"login-fail:{key}", 24 * HOUR)
    failures, _ = await pipe.execute()
    over = failures - settings.login_failures_before_backoff
    if over >= 0:
        lock = min(2 ** min(over + 1, 20), settings.login_backoff_max_seconds)
        await get_redis().set(f"login-lock:{key}", "1", ex=lock)


async def clear_login(email: str) -> None:
    """A successful login or a password reset ends the backoff."""
    key = _address_key(email)
    await get_redis().delete(f"login-fail:{key}", f"login-lock:{key}")
