import pytest
from pydantic import ValidationError

from app.config import Settings


def test_production_refuses_default_or_empty_secrets():
    with pytest.raises(ValidationError) as err:
        Settings(environment="production", _env_file=None)
    for name in ("JWT_SECRET", "ENCRYPTION_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_SECRET_KEY"):
        assert name in str(err.value)
    with pytest.raises(ValidationError):
        Settings(environment="staging", jwt_secret="", _env_file=None)


def test_production_starts_with_real_secrets():
    settings = Settings(
        environment="production", jwt_secret="j" * 48, encryption_key="c2VjcmV0LWtleS1mb3ItdGVzdHMtMzItYnl0ZXMhIQ==",
        stripe_webhook_secret="whsec_real", stripe_secret_key="sk_live_real", _env_file=None,
    )
    assert settings.is_production_like


def test_dev_and_test_accept_defaults():
    assert Settings(environment="dev", _env_file=None).jwt_secret
    assert Settings(environment="test", _env_file=None).jwt_secret
