"""Settings fail closed: production refuses dev secrets, simulation switches and missing protections."""

import pytest
from pydantic import ValidationError

from app.config import Settings

STRONG = {
    "jwt_secret": "j" * 48, "encryption_key": "c2VjcmV0LWtleS1mb3ItdGVzdHMtMzItYnl0ZXMhIQ==",
    "stripe_webhook_secret": "whsec_real", "stripe_secret_key": "sk_live_real", "mail_backend": "sendgrid",
    "sendgrid_api_key": "SG.real", "metrics_token": "m" * 32, "cors_origins": ["https://app.peertest.example"],
    # the suite's environment runs the embedded stand-ins; production must not
    "stripe_simulate_connect": False, "stripe_api_base": "", "faults": "", "expose_db_commands": False,
}


def production(**overrides) -> Settings:
    return Settings(**{"environment": "production", **STRONG, **overrides}, _env_file=None)


def refusal(**overrides) -> str:
    with pytest.raises(ValidationError) as err:
        production(**overrides)
    return str(err.value)


def test_a_forgotten_environment_means_production(monkeypatch):
    monkeypatch.delenv("ENVIRONMENT", raising=False)
    with pytest.raises(ValidationError) as err:
        Settings(_env_file=None)
    assert "refusing to start in production" in str(err.value) and "JWT_SECRET" in str(err.value)


def test_production_refuses_default_or_empty_secrets():
    with pytest.raises(ValidationError) as err:
        Settings(environment="production", _env_file=None)
    for name in ("JWT_SECRET", "ENCRYPTION_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_SECRET_KEY"):
        assert name in str(err.value)
    with pytest.raises(ValidationError):
        Settings(environment="staging", jwt_secret="", _env_file=None)


def test_production_starts_with_real_secrets_and_named_origins():
    settings = production()
    assert settings.is_production_like and not settings.docs_enabled


@pytest.mark.parametrize(("override", "named"), [
    ({"stripe_simulate_connect": True}, "STRIPE_SIMULATE_CONNECT"),
    ({"faults": "deposits.after_credit=raise"}, "FAULTS"),
    ({"expose_db_commands": True}, "EXPOSE_DB_COMMANDS"),
    ({"mail_backend": "outbox"}, "MAIL_BACKEND"),
    ({"sendgrid_api_key": ""}, "SENDGRID_API_KEY"),
    ({"stripe_api_base": "http://127.0.0.1:8420"}, "STRIPE_API_BASE"),
    ({"metrics_token": ""}, "METRICS_TOKEN"),
    ({"forwarded_allow_ips": "*"}, "FORWARDED_ALLOW_IPS"),  # clients would choose their own address
])
def test_production_refuses_simulation_and_missing_protection(override, named):
    assert named in refusal(**override)


def test_production_needs_explicit_cors_origins():
    settings = {k: v for k, v in STRONG.items() if k != "cors_origins"}
    with pytest.raises(ValidationError) as err:
        Settings(environment="production", **settings, _env_file=None)
    assert "CORS_ORIGINS" in str(err.value)


@pytest.mark.parametrize("origin", ["*", "https://app.example/path", "ftp://x.example", "app.example",
                                    "https://user@app.example"])
def test_cors_origins_are_plain_origins(origin):
    with pytest.raises(ValidationError):
        Settings(environment="dev", cors_origins=[origin], _env_file=None)


def test_a_forwarded_allow_ips_entry_that_is_not_an_address_is_refused_at_start():
    """A host name (uvicorn accepts one) is refused when the settings load, not a 500 on each request."""
    with pytest.raises(ValidationError, match="lb.internal"):
        Settings(environment="test", forwarded_allow_ips="10.0.0.1, lb.internal", _env_file=None)


def test_dev_and_test_accept_defaults():
    assert Settings(environment="dev", _env_file=None).jwt_secret
    assert Settings(environment="test", _env_file=None).docs_enabled
