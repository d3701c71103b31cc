"""Where ENVIRONMENT comes from, so a forgotten variable never runs production on dev secrets: the
image and the compose file default to production and compose requires every secret; the scripts
set dev (run, bench) or test (test) explicitly instead of relying on the app's default."""

import base64
import re
import secrets

import pytest
import yaml

from app.config import Settings
from tests.fixtures.private_stack import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
APP_ENV = COMPOSE["x-app"]["environment"]
SECRETS = ("JWT_SECRET", "ENCRYPTION_KEY", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "METRICS_TOKEN",
           "AWS_SECRET_ACCESS_KEY")


def test_the_image_defaults_to_production():
    assert re.search(r"^ENV ENVIRONMENT=production\b", (ROOT / "Dockerfile").read_text(), re.M)


def test_compose_defaults_to_production_and_requires_every_secret():
    assert APP_ENV["ENVIRONMENT"] == "${ENVIRONMENT:-production}"
    for name in SECRETS:
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", APP_ENV[name]), f"{name} must be required: {APP_ENV[name]}"
    minio = COMPOSE["services"]["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    assert minio.startswith("${MINIO_ROOT_PASSWORD:?"), minio


def compose_value(value: str, given: dict[str, str]) -> str:
    """What compose makes of `${VAR:-default}` / `${VAR:?message}` / a literal."""
    def one(match: re.Match) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if name in given:
            return given[name]
        if op == ":?":
            raise AssertionError(f"compose stops: {name} is required")
        return rest

    return re.sub(r"\$\{([A-Z_]+)(:-|:\?)([^}]*)\}", one, value)


def test_compose_production_with_its_required_values_passes_the_app_settings(monkeypatch):
    """The compose file and the app's fail-closed settings agree: what compose requires (plus a
    SendGrid key, which production mail needs) is enough for production to start."""
    given = {name: secrets.token_hex(32) for name in ("JWT_SECRET", "METRICS_TOKEN", "MINIO_ROOT_PASSWORD")}
    given |= {"ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
              "STRIPE_SECRET_KEY": "sk_live_" + secrets.token_hex(8),
              "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_hex(8),
              "CORS_ORIGINS": '["https://app.example.com"]',
              "SENDGRID_API_KEY": "SG." + secrets.token_hex(8)}
    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    for name, value in APP_ENV.items():
        monkeypatch.setenv(name, compose_value(str(value), given))
    settings = Settings(_env_file=None)
    assert settings.environment == "production" and settings.mail_backend == "sendgrid"

    monkeypatch.setenv("JWT_SECRET", "dev-insecure-secret-change-me-0123456789")
    with pytest.raises(ValueError, match="refusing to start in production"):
        Settings(_env_file=None)


@pytest.mark.parametrize(("script", "line"), [
    ("run", 'export ENVIRONMENT="${ENVIRONMENT:-dev}"'),
    ("bench", 'export ENVIRONMENT="${ENVIRONMENT:-dev}"'),
    ("test", "export ENVIRONMENT=test"),
])
def test_the_scripts_set_environment_explicitly(script, line):
    assert line in (ROOT / "scripts" / script).read_text()
