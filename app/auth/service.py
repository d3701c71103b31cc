"""Registration, email verification, login, refresh rotation with reuse detection, password reset.

Mail goes through auth tasks (app/auth/tasks.py): the request queues an address, the worker issues
and mails the token, so the routes take the same path whether or not the account exists."""

import uuid
from datetime import timedelta

from pymongo.asynchronous.client_session import AsyncClientSession

from app.auth import throttle, tokens
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
from app.kit.queue import DEFAULT
from app.kit.security import hash_password, hash_token, verify_password
from app.kit.timeutil import as_utc, utcnow
from app.outbox import service as outbox
from app.users.models import User

SEND_VERIFICATION = "app.auth.tasks.send_verification"
SEND_PASSWORD_RESET = "app.auth.tasks.send_password_reset"


# -- registration and verification --------------------------------------------------------------
async def register(data: RegisterIn, client_ip: str) -> User:
    email = data.email.lower()
    await throttle.ip_budget(client_ip)
    check_strength(data.password, email)
    password_hash = await hash_password(data.password)
    existing = await User.find_one(User.email == email)
    if existing is not None and _holds_address(existing):
        raise _taken(existing)
    await throttle.address_budget("verify", email)  # only a new account mails the address

    async def create(session: AsyncClientSession) -> User:
        await _drop_expired_registration(session, email)
        user = User(email=email, password_hash=password_hash, role=data.role, display_name=data.display_name)
        await user.insert(session=session)
        await _queue_mail(session, SEND_VERIFICATION, email)
        return user

    with duplicate_key_as(EmailTaken):
        return await run_in_transaction(create)


async def _drop_expired_registration(session: AsyncClientSession, email: str) -> None:
    existing = await User.find_one(User.email == email, session=session)
    if existing is None:
        return
    if _holds_address(existing):
        raise _taken(existing)
    await OneTimeToken.find(OneTimeToken.user_id == existing.id, session=session).delete(session=session)
    await existing.delete(session=session)


def _holds_address(user: User) -> bool:
    """An unverified account holds its address for one verification-token lifetime from its
    registration (a resend does not extend it); then a new registration replaces it, since nobody
    could log into it."""
    lifetime = timedelta(seconds=get_settings().email_token_ttl_seconds)
    return user.email_verified or as_utc(user.created_at) > utcnow() - lifetime


def _taken(user: User) -> EmailTaken:
    if user.email_verified:
        return EmailTaken()
    return EmailTaken("An unverified registration holds this address for now. If the address is yours, "
                      "reset the password: that takes the account over at once.")


async def resend_verification(email: str, client_ip: str) -> None:
    email = email.lower()
    await throttle.mail_route("verify", client_ip, email)
    await run_in_transaction(lambda session: _queue_mail(session, SEND_VERIFICATION, email))


async def verify_email(token: str) -> User:
    async def verify(session: AsyncClientSession) -> User:
        record = await tokens.consume_one_time(session, token, "verify_email")
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
    email = email.lower()
    await ratelimit.enforce("login", client_ip, get_settings().login_rate_per_minute)
    await throttle.admit_login(email)
    user = await User.find_one(User.email == email)
    valid, new_hash = await verify_password(password, user.password_hash if user else None)
    if not valid or user is None:
        raise InvalidCredentials()  # admit_login counted the attempt, and set the backoff it earns
    await throttle.clear_login(email)
    if not user.is_active:
        raise AccountDisabled()
    if not user.email_verified:
        raise EmailNotVerified()

    async def issue(session: AsyncClientSession) -> TokenPair:
        if new_hash:  # the stored hash used outdated parameters: keep the stronger one
            await User.get_pymongo_collection().update_one(
                {"_id": user.id, "password_hash": user.password_hash}, {"$set": {"password_hash": new_hash}},
                session=session)
        return await tokens.issue_pair(session, user, family_id=uuid.uuid4().hex)

    return await run_in_transaction(issue)


async def refresh(raw_token: str) -> TokenPair:
    async def rotate(session: AsyncClientSession) -> TokenPair | None:
        record = await RefreshToken.find_one(RefreshToken.token_hash == hash_token(raw_token), session=session)
        if record is None or as_utc(record.expires_at) <= utcnow() or tokens.family_expired(record):
            raise InvalidToken()
        if record.used_at is not None or record.revoked_at is not None:
            await tokens.revoke_family(session, record)
            return None  # commit the revocation, then refuse
        user = await User.get(record.user_id, session=session)
        if user is None or not user.is_active or record.token_version != user.token_version:
            raise InvalidToken()
        record.used_at = utcnow()
        await record.save(session=session)
        return await tokens.issue_pair(session, user, record.family_id, record.family_started_at or record.created_at)

    pair = await run_in_transaction(rotate)
    if pair is None:
        raise RefreshTokenReused()
    return pair


async def logout(raw_token: str) -> None:
    async def revoke(session: AsyncClientSession) -> None:
        record = await RefreshToken.find_one(RefreshToken.token_hash == hash_token(raw_token), session=session)
        if record is not None:
            await tokens.revoke_family(session, record)

    await run_in_transaction(revoke)


# -- password reset -----------------------------------------------------------------------------
async def request_password_reset(email: str, client_ip: str) -> None:
    email = email.lower()
    await throttle.mail_route("reset", client_ip, email)
    await run_in_transaction(lambda session: _queue_mail(session, SEND_PASSWORD_RESET, email))


async def confirm_password_reset(token: str, new_password: str, client_ip: str) -> None:
    """The token is checked before the (deliberately expensive) hash, so bogus tokens cost nothing."""
    await ratelimit.enforce("reset_confirm", client_ip, get_settings().reset_confirm_rate_per_ip_per_minute)
    record = await tokens.live_one_time(token, "password_reset")
    owner = await User.get(record.user_id)
    if owner is None:
        raise InvalidOneTimeToken()
    check_strength(new_password, owner.email)
    new_hash = await hash_password(new_password)

    async def reset(session: AsyncClientSession) -> None:
        await tokens.consume_one_time(session, token, "password_reset")
        user = await User.get(owner.id, session=session)
        now = utcnow()
        user.password_hash = new_hash
        user.email_verified = True  # the token was mailed to the address: its owner now holds the account
        user.token_version += 1  # voids every access and refresh token issued before, to the instant
        user.revoked_sessions = []
        user.updated_at = now
        await user.save(session=session)
        await tokens.void_unused(session, user, "password_reset")
        await RefreshToken.find(
            RefreshToken.user_id == user.id, RefreshToken.revoked_at == None, session=session  # noqa: E711
        ).update({"$set": {"revoked_at": now}}, session=session)

    await run_in_transaction(reset)
    await throttle.clear_login(owner.email)


async def _queue_mail(session: AsyncClientSession, task: str, email: str) -> None:
    await outbox.add(session, task, email, key=f"{task.rsplit('.', 1)[1]}:{uuid.uuid4().hex}", queue=DEFAULT,
                     label=task.rsplit(".", 1)[1].replace("_", " "))
