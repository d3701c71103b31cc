"""Limits on the auth routes strangers can call: per client IP and per target address, and the
per-account login backoff. Addresses are keyed by a hash, so Redis holds no email addresses."""

import hashlib

from app.config import get_settings
from app.errors import LoginThrottled
from app.kit import ratelimit
from app.kit.redis import get_redis

HOUR = 3600
FAILURES_KEPT_SECONDS = 24 * HOUR

# One attempt is admitted atomically, before the (slow) password check. Each attempt counts as a
# failure until it succeeds (a success clears the count). From the threshold on, an attempt takes the
# account's lock for the backoff its failure would earn: 2 s at the threshold, doubling, capped. Past
# the threshold the lock must be free, so a parallel burst gets one guess per backoff window, and an
# attempt that dies mid-way holds the account no longer than a failure would. Returns the seconds left
# when refused, else 0.
_ADMIT = """
local failures = tonumber(redis.call('GET', KEYS[1]) or '0')
local threshold = tonumber(ARGV[1])
local attempt = failures + 1
if attempt >= threshold then
  local wait = math.floor(math.min(2 ^ math.min(attempt - threshold + 1, 20), tonumber(ARGV[2])))
  if failures >= threshold then
    if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', wait) then
      return math.max(redis.call('TTL', KEYS[2]), 1)
    end
  else
    redis.call('SET', KEYS[2], '1', 'EX', wait)
  end
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 0
"""


def _address_key(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def _keys(email: str) -> tuple[str, str]:
    key = _address_key(email)
    return f"login-fail:{key}", f"login-lock:{key}"


async def mail_route(purpose: str, ip: str, email: str) -> None:
    """A route that sends mail to `email`: per IP (one client spraying addresses, all mail routes
    together) and per address and purpose (many clients flooding one inbox). Verification and reset
    budgets are apart, so spending one never blocks the other. Counted whether or not the account exists."""
    await ip_budget(ip)
    await address_budget(purpose, email)


async def ip_budget(ip: str) -> None:
    await ratelimit.enforce("mail:ip", ip, get_settings().email_rate_per_ip_per_hour, HOUR)


async def address_budget(purpose: str, email: str) -> None:
    await ratelimit.enforce(f"mail:to:{purpose}", _address_key(email),
                            get_settings().email_rate_per_address_per_hour, HOUR)


async def admit_login(email: str) -> None:
    """Refuse while the account's backoff runs; no password is checked (or hashed) meanwhile. After
    LOGIN_FAILURES_BEFORE_BACKOFF failures in a row, each failure locks the account's logins for 2 s,
    4 s, 8 s … up to LOGIN_BACKOFF_MAX_SECONDS. Keyed by address, so unknown accounts behave alike."""
    settings = get_settings()
    failures_key, lock_key = _keys(email)
    admitted = get_redis().register_script(_ADMIT)
    wait = await admitted(keys=[failures_key, lock_key],
                          args=[settings.login_failures_before_backoff, settings.login_backoff_max_seconds,
                                FAILURES_KEPT_SECONDS])
    if int(wait) > 0:
        raise LoginThrottled(int(wait))


async def clear_login(email: str) -> None:
    """A successful login or a password reset ends the backoff."""
    await get_redis().delete(*_keys(email))
