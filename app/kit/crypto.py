"""AES-256-GCM for secrets at rest. Each sealed value names its key ("<key id>.<base64>"), so keys can
be rotated: ENCRYPTION_KEY / ENCRYPTION_KEY_ID seal new data, ENCRYPTION_OLD_KEYS still open old data."""

import base64
import binascii
import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.config import get_settings


class UnknownKey(ValueError):
    """Sealed with a key this process does not have (retired too early, or never configured)."""


def _decode_key(key_id: str, encoded: str) -> bytes:
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 32:
        raise ValueError(f"encryption key {key_id!r} must be base64 of exactly 32 bytes")
    return key


@lru_cache(maxsize=4)
def _keyring(current_id: str, current: str, old: str) -> dict[str, bytes]:
    ring = {}
    for entry in filter(None, (item.strip() for item in old.split(","))):
        key_id, _, encoded = (part.strip() for part in entry.partition(":"))
        if key_id in ring or key_id == current_id:
            raise ValueError(f"encryption key id {key_id!r} is given twice: each key needs its own id")
        ring[key_id] = _decode_key(key_id, encoded)
    ring[current_id] = _decode_key(current_id, current)
    return ring


def _keys() -> tuple[str, dict[str, bytes]]:
    settings = get_settings()
    return settings.encryption_key_id, _keyring(settings.encryption_key_id, settings.encryption_key,
                                                settings.encryption_old_keys)


def check_keys() -> None:
    """Fail at start-up, not at the first decrypt, when a configured key is malformed."""
    _keys()


def encrypt(plaintext: str, associated_data: bytes = b"") -> str:
    key_id, ring = _keys()
    nonce = os.urandom(12)
    sealed = AESGCM(ring[key_id]).encrypt(nonce, plaintext.encode(), associated_data)
    return f"{key_id}.{base64.b64encode(nonce + sealed).decode()}"


def decrypt(token: str, associated_data: bytes = b"") -> str:
    _, ring = _keys()
    key_id, dot, body = token.partition(".")
    if not dot:  # sealed before key ids existed: whichever key of the ring opens it
        return _open_with_any(ring, base64.b64decode(token), associated_data)
    if key_id not in ring:
        raise UnknownKey(f"no key {key_id!r}: add it to ENCRYPTION_OLD_KEYS")
    raw = base64.b64decode(body)
    return AESGCM(ring[key_id]).decrypt(raw[:12], raw[12:], associated_data).decode()


def _open_with_any(ring: dict[str, bytes], raw: bytes, associated_data: bytes) -> str:
    for key in reversed(ring.values()):  # the current key first
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], associated_data).decode()
        except InvalidTag:
            continue
    raise UnknownKey("no configured key opens this value: add its key to ENCRYPTION_OLD_KEYS")
