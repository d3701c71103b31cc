"""Sealed values name their key, so keys rotate without losing what was sealed before."""

import base64

import pytest

from app.kit import crypto

KEY_2 = base64.b64encode(b"second-key-for-rotation-32-bytes").decode()


def test_sealed_values_name_their_key_and_keep_opening_after_a_rotation(settings):
    sealed = crypto.encrypt("token: abc", b"ctx")
    assert sealed.startswith(f"{settings.encryption_key_id}.") and "abc" not in sealed
    old_id, old_key = settings.encryption_key_id, settings.encryption_key
    settings.encryption_key_id, settings.encryption_key = "k2", KEY_2
    settings.encryption_old_keys = f"{old_id}:{old_key}"
    assert crypto.decrypt(sealed, b"ctx") == "token: abc"  # opened with the retired key
    assert crypto.encrypt("new", b"ctx").startswith("k2.")  # new data uses the new key


def test_a_value_whose_key_was_dropped_is_refused_clearly(settings):
    sealed = crypto.encrypt("secret")
    settings.encryption_key_id, settings.encryption_key, settings.encryption_old_keys = "k2", KEY_2, ""
    with pytest.raises(crypto.UnknownKey, match="ENCRYPTION_OLD_KEYS"):
        crypto.decrypt(sealed)


def test_values_sealed_before_key_ids_still_open(settings):
    legacy = crypto.encrypt("legacy").split(".", 1)[1]  # the old format had no key id
    assert crypto.decrypt(legacy) == "legacy"


def test_a_value_sealed_before_key_ids_still_opens_after_a_rotation(settings):
    """The README's rotation (a new key with a new id, the old one in ENCRYPTION_OLD_KEYS) keeps id-less values."""
    legacy = crypto.encrypt("Token: abc", b"outbox-email").split(".", 1)[1]  # the format before key ids
    old_id, old_key = settings.encryption_key_id, settings.encryption_key
    settings.encryption_key_id, settings.encryption_key = "k2", KEY_2
    settings.encryption_old_keys = f"{old_id}:{old_key}"
    assert crypto.decrypt(legacy, b"outbox-email") == "Token: abc"


def test_a_malformed_key_fails_at_start_up(settings):
    settings.encryption_old_keys = "k0:not-base64!"
    with pytest.raises(ValueError, match="k0"):
        crypto.check_keys()
