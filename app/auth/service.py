"""Registration, email verification, login, refresh rotation with reuse detection, password reset."""

import uuid
from datetime import timedelta

from pymongo.asynchronous.client_session import AsyncClientSession

from app.auth.models import OneTimeToken, RefreshToken
from app.auth.schemas import RegisterIn, TokenPair
from app.config import get_settings
from app.db import duplicate_key_as, run_in_transaction
from app.errors import (
    AccountDisabled,
    EmailNotVerified,
    EmailTaken,
    InvalidCredentials,
    InvalidOneTimeToken,
    InvalidToken,
    RefreshTokenReused,
)
from app.kit import ratelimit
from app.kit.passwords import check_strength
from app.kit.security import create_access_token, hash_password, hash_token, new_opaque_token, verify_password
from app.kit.timeutil import as_utc, utcnow
from app.notifications import service as notifications
from app.users.models import User


# -- registration and verification --------------------------------------------------------------
async def register(data: RegisterIn) -> User:
    email = data.email.lower()
    check_strength(data.password, email)
    password_hash = await hash_password(data.password)

    async def create(session: AsyncClientSession) -> User:
        user = User(email=email, password_hash=password_hash, role=data.role, display_name=data.display_name)
        await user.insert(session=session)
        token = await _issue_one_time_token(session, user, "verify_email")
        await _send_verification(session, user, token)
        return user

    with duplicate_key_as(EmailTaken):
        return await run_in_transaction(create)


async def resend_verification(email: str) -> None:
    user = await User.find_one(User.email == email.lower())
    if user is None or user.email_verified:
        return

    async def issue(session: AsyncClientSession) -> None:
        token = await _issue_one_time_token(session, user, "verify_email")
        await _send_verification(session, user, token)

    await run_in_transaction(issue)


async def verify_email(token: str) -> User:
    async def verify(session: AsyncClientSession) -> User:
        record = await _consume_one_time_token(session, token, "verify_email")
        user = await User.get(record.user_id, session=session)
        if user is None:
            raise InvalidOneTimeToken()
        user.email_verified = True
        user.updated_at = utcnow()
        await user.save(session=session)
        return user

    return await run_in_transaction(verify)


# -- login and token rotation -------------------------------------------------------------------
async def login(email: str, password: str, client_ip: str) -> TokenPair:
    settings = get_settings()
    await ratelimit.enforce("login", client_ip, settings.login_rate_per_minute)
    user = await User.find_one(User.email == email.lower())
    if not await verify_password(password, user.password_hash if user else None) or user is None:
        raise InvalidCredentials()
    if not user.is_active:
        raise AccountDisabled()
    if not user.email_verified:
        raise EmailNotVerified()
    return await run_in_transaction(lambda session: _issue_pair(session, user, family_id=uuid.uuid4().hex))


async def refresh(raw_token: str) -> TokenPair:
    async def rotate(session: AsyncClientSession) -> TokenPair | None:
        record = await RefreshToken.find_one(RefreshToken.token_hash == hash_token(raw_token), session=session)
        if record is None or as_utc(record.expires_at) <= utcnow():
            raise InvalidToken()
        if record.used_at is not None or record.revoked_at is not None:
            await _revoke_family(session, record.family_id)
            return None  # commit the revocation, then refuse
        user = await User.get(record.user_id, session=session)
        if user is None or not user.is_active or _issued_before_reset(user, record):
            raise InvalidToken()
        record.used_at = utcnow()
        await record.save(session=session)
        return await _issue_pair(session, user, family_id=record.family_id)

    pair = await run_in_transaction(rotate)
    if pair is None:
        raise RefreshTokenReused()
    return pair


async def logout(raw_token: str) -> None:
    async def revoke(session: AsyncClientSession) -> None:
        record = await RefreshToken.find_one(RefreshToken.token_hash == hash_token(raw_token), session=session)
        if record is not None:
            await _revoke_family(session, record.family_id)

    await run_in_transaction(revoke)


# -- password reset -----------------------------------------------------------------------------
async def request_password_reset(email: str, client_ip: str) -> None:
    await ratelimit.enforce("password_reset", client_ip, 10)
    user = await User.find_one(User.email == email.lower())
    if user is None or not user.is_active:
        return

    async def issue(session: AsyncClientSession) -> None:
        token = await _issue_one_time_token(session, user, "password_reset")
        await _send_reset(session, user, token)

    await run_in_transaction(issue)


async def confirm_password_reset(token: str, new_password: str) -> None:
    async def reset(session: AsyncClientSession) -> None:
        record = await _consume_one_time_token(session, token, "password_reset")
        user = await User.get(record.user_id, session=session)
        if user is None:
            raise InvalidOneTimeToken()
        check_strength(new_password, user.email)
        now = utcnow()
        user.password_hash = new_hash
        user.tokens_valid_after = now
        user.updated_at = now
        await user.save(session=session)
        await RefreshToken.find(
            RefreshToken.user_id == user.id, RefreshToken.revoked_at == None, session=session  # noqa: E711
        ).update({"$set": {"revoked_at": now}}, session=session)

    check_strength(new_password)
    new_hash = await hash_password(new_password)
    await run_in_transaction(reset)


# -- helpers ------------------------------------------------------------------------------------
def _issued_before_reset(user: User, record: RefreshToken) -> bool:
    return user.tokens_valid_after is not None and as_utc(record.created_at) < as_utc(user.tokens_valid_after)


async def _issue_pair(session: AsyncClientSession, user: User, family_id: str) -> TokenPair:
    settings = get_settings()
    raw = new_opaque_token()
    await RefreshToken(
        token_hash=hash_token(raw),
        user_id=user.id,
        family_id=family_id,
        expires_at=utcnow() + timedelta(seconds=settings.refresh_token_ttl_seconds),
    ).insert(session=session)
    access, ttl = create_access_token(str(user.id), user.role)
    return TokenPair(access_token=access, refresh_token=raw, expires_in=ttl)


async def _revoke_family(session: AsyncClientSession, family_id: str) -> None:
    await RefreshToken.find(
        RefreshToken.family_id == family_id, RefreshToken.revoked_at == None, session=session  # noqa: E711
    ).update({"$set": {"revoked_at": utcnow()}}, session=session)


async def _issue_one_time_token(session: AsyncClientSession, user: User, purpose: str) -> str:
    settings = get_settings()
    ttl = settings.email_token_ttl_seconds if purpose == "verify_email" else settings.reset_token_ttl_seconds
    raw = new_opaque_token()
    await OneTimeToken(
        token_hash=hash_token(raw),
        purpose=purpose,
        user_id=user.id,
        expires_at=utcnow() + timedelta(seconds=ttl),
    ).insert(session=session)
    return raw


async def _consume_one_time_token(session: AsyncClientSession, raw: str, purpose: str) -> OneTimeToken:
    record = await OneTimeToken.find_one(
        OneTimeToken.token_hash == hash_token(raw), OneTimeToken.purpose == purpose, session=session
    )
    if record is None or record.used_at is not None or as_utc(record.expires_at) <= utcnow():
        raise InvalidOneTimeToken()
    record.used_at = utcnow()
    await record.save(session=session)
    return record


async def _send_verification(session: AsyncClientSession, user: User, token: str) -> None:
    await _send_token_mail(session, user, token, "Verify your PeerTest Hub email", "verify-email",
                           "Confirm your email address", "The token expires in 24 hours and works once.")


async def _send_reset(session: AsyncClientSession, user: User, token: str) -> None:
    await _send_token_mail(session, user, token, "Reset your PeerTest Hub password", "reset-password",
                           "Someone asked to reset your password. To choose a new one",
                           "It expires in one hour and works once. If this was not you, ignore this email.")


async def _send_token_mail(session: AsyncClientSession, user: User, token: str, subject: str, page: str,
                           action: str, expiry: str) -> None:
    link = f"{get_settings().frontend_base_url}/{page}?token={token}"
    await notifications.email(
        session,
        user.email,
        subject,
        f"Hi {user.display_name},\n\n{action}, open:\n{link}\n\n"
        f"Or paste this token into the app.\nToken: {token}\n\n{expiry}\n",
    )
