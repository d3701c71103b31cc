"""JWTs, password hashing and opaque token hashing."""

import asyncio
import hashlib
import secrets
import uuid
from datetime import timedelta
from typing import Any

from jose import JWTError, jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from app.config import get_settings
from app.errors import InvalidToken
from app.kit.timeutil import utcnow


def _hasher() -> PasswordHash:
    if get_settings().environment == "test":
        # Cheap parameters keep the suite fast; production uses pwdlib's recommended ones.
        return PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))
    return PasswordHash.recommended()


_password_hash: PasswordHash | None = None


def password_hasher() -> PasswordHash:
    global _password_hash
    if _password_hash is None:
        _password_hash = _hasher()
    return _password_hash


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(password_hasher().hash, password)


async def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """(valid, new hash): the new hash is set when the stored one used outdated parameters."""
    if not password_hash:
        # Spend the same time as a real check so unknown emails are not revealed by timing.
        await asyncio.to_thread(password_hasher().hash, password)
        return False, None
    return await asyncio.to_thread(password_hasher().verify_and_update, password, password_hash)


def new_opaque_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_access_token(user_id: str, role: str, family_id: str, token_version: int) -> tuple[str, int]:
    """`fid` names the login session (logout revokes it), `ver` the user's token version (a password
    reset bumps it, voiding every earlier token whatever its second of issue)."""
    settings = get_settings()
    now = utcnow()
    ttl = settings.access_token_ttl_seconds
    claims = {
        "sub": user_id,
        "role": role,
        "type": "access",
        "fid": family_id,
        "ver": token_version,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=settings.jwt_algorithm), ttl


def decode_access_token(token: str) -> dict[str, Any]:
    settings = get_settings()
    try:
        # Pinning the algorithm list rejects alg=none and algorithm confusion.
        claims = jwt.decode(token, settings.jwt_secret, algorithms=[settings.jwt_algorithm])
    except JWTError:
        raise InvalidToken() from None
    if claims.get("type") != "access" or not isinstance(claims.get("sub"), str):
        raise InvalidToken()
    return claims
