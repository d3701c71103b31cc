"""AES-256-GCM for secrets at rest (test-account credentials)."""

import base64
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.config import get_settings


def _key() -> bytes:
    key = base64.b64decode(get_settings().encryption_key)
    if len(key) != 32:
        raise ValueError("ENCRYPTION_KEY must be base64 of exactly 32 bytes")
    return key


def encrypt(plaintext: str, associated_data: bytes = b"") -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(_key()).encrypt(nonce, plaintext.encode(), associated_data)
    return base64.b64encode(nonce + sealed).decode()


def decrypt(token: str, associated_data: bytes = b"") -> str:
    raw = base64.b64decode(token)
    return AESGCM(_key()).decrypt(raw[:12], raw[12:], associated_data).decode()
