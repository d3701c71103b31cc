"""The tokens auth hands out: single-use email tokens, refresh-token families and their revocation."""

from datetime import datetime, timedelta

from pymongo.asynchronous.client_session import AsyncClientSession

from app.auth.models import OneTimeToken, RefreshToken
from app.auth.schemas import TokenPair
from app.config import get_settings
from app.errors import InvalidOneTimeToken
from app.kit.security import create_access_token, hash_token, new_opaque_token
from app.kit.timeutil import as_utc, utcnow
from app.users.models import RevokedSession, User

MAX_REVOKED_SESSIONS = 50


# -- single-use email tokens --------------------------------------------------------------------
async def issue_one_time(session: AsyncClientSession, user: User, purpose: str) -> str:
    settings = get_settings()
    ttl = settings.email_token_ttl_seconds if purpose == "verify_email" else settings.reset_token_ttl_seconds
    raw = new_opaque_token()
    await OneTimeToken(token_hash=hash_token(raw), purpose=purpose, user_id=user.id,
                       expires_at=utcnow() + timedelta(seconds=ttl)).insert(session=session)
    return raw


async def live_one_time(raw: str, purpose: str, session: AsyncClientSession | None = None) -> OneTimeToken:
    record = await OneTimeToken.find_one(
        OneTimeToken.token_hash == hash_token(raw), OneTimeToken.purpose == purpose, session=session
    )
    if record is None or record.used_at is not None or as_utc(record.expires_at) <= utcnow():
        raise InvalidOneTimeToken()
    return record


async def consume_one_time(session: AsyncClientSession, raw: str, purpose: str) -> OneTimeToken:
    record = await live_one_time(raw, purpose, session)
    record.used_at = utcnow()
    await record.save(session=session)
    return record


async def void_unused(session: AsyncClientSession, user: User, purpose: str) -> None:
    await OneTimeToken.find(OneTimeToken.user_id == user.id, OneTimeToken.purpose == purpose,
                            OneTimeToken.used_at == None, session=session  # noqa: E711
                            ).update({"$set": {"used_at": utcnow()}}, session=session)


# -- refresh families ---------------------------------------------------------------------------
async def issue_pair(session: AsyncClientSession, user: User, family_id: str,
                     family_started_at: datetime | None = None) -> TokenPair:
    """A new refresh token of the family (never outliving the family's hard maximum age) and an access token."""
    settings = get_settings()
    now = utcnow()
    started = as_utc(family_started_at) if family_started_at else now
    expires = min(now + timedelta(seconds=settings.refresh_token_ttl_seconds),
                  started + timedelta(seconds=settings.refresh_family_max_age_seconds))
    raw = new_opaque_token()
    await RefreshToken(token_hash=hash_token(raw), user_id=user.id, family_id=family_id, family_started_at=started,
                       token_version=user.token_version, expires_at=expires).insert(session=session)
    access, ttl = create_access_token(str(user.id), user.role, family_id, user.token_version)
    return TokenPair(access_token=access, refresh_token=raw, expires_in=ttl)


def family_expired(record: RefreshToken) -> bool:
    started = as_utc(record.family_started_at or record.created_at)
    return utcnow() - started > timedelta(seconds=get_settings().refresh_family_max_age_seconds)


async def revoke_family(session: AsyncClientSession, record: RefreshToken) -> None:
    """The family's refresh tokens, and (through the user's revoked sessions) its live access tokens."""
    now = utcnow()
    await RefreshToken.find(
        RefreshToken.family_id == record.family_id, RefreshToken.revoked_at == None, session=session  # noqa: E711
    ).update({"$set": {"revoked_at": now}}, session=session)
    user = await User.get(record.user_id, session=session)
    if user is None:
        return
    horizon = now - timedelta(seconds=get_settings().access_token_ttl_seconds + 60)
    live = [s for s in user.revoked_sessions if as_utc(s.revoked_at) > horizon and s.family_id != record.family_id]
    if len(live) >= MAX_REVOKED_SESSIONS:  # too many to list: void every token instead
        user.token_version += 1
        live = []
    else:
        live.append(RevokedSession(family_id=record.family_id, revoked_at=now))
    user.revoked_sessions = live
    await user.save(session=session)


def access_revoked(user: User, claims: dict) -> bool:
    """True for a token of an older token version or of a logged-out session."""
    if claims.get("ver", 0) != user.token_version:
        return True
    family_id = claims.get("fid")
    return any(s.family_id == family_id for s in user.revoked_sessions)
