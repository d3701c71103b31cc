"""One settings object for the whole app; every value can come from the environment."""

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-insecure-secret-change-me-0123456789"
DEV_ENCRYPTION_KEY = "ZGV2LWluc2VjdXJlLWtleS0zMi1ieXRlcy1sb25nISE="  # 32 bytes, base64


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Literal["dev", "test", "staging", "production"] = "dev"
    app_name: str = "peertest-hub"
    public_base_url: str = "http://127.0.0.1:8000"
    frontend_base_url: str = "http://127.0.0.1:5173"
    cors_origins: list[str] = ["http://localhost:5173", "http://127.0.0.1:5173"]
    log_level: str = "INFO"
    metrics_token: str = ""  # when set, /metrics needs "Authorization: Bearer <token>"
    sentry_dsn: str = ""
    max_body_bytes: int = 1_048_576
    expose_db_commands: bool = False  # adds X-DB-Commands to responses (scripts/bench)

    mongo_uri: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    mongo_db: str = "peertest"
    transaction_timeout_seconds: float = 120.0
    transaction_unreachable_seconds: float = 10.0  # MongoDB unreachable this long: give up (503)
    redis_url: str = "redis://127.0.0.1:6379/0"

    jwt_secret: str = DEV_SECRET
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    access_token_ttl_seconds: int = 15 * 60
    refresh_token_ttl_seconds: int = 7 * 24 * 3600
    email_token_ttl_seconds: int = 24 * 3600
    reset_token_ttl_seconds: int = 3600
    encryption_key: str = DEV_ENCRYPTION_KEY  # base64 of 32 bytes, AES-256-GCM
    password_min_length: int = 10
    login_rate_per_minute: int = 5
    user_rate_per_minute: int = 100

    mail_backend: Literal["outbox", "sendgrid"] = "outbox"
    mail_outbox_dir: str = ".run/outbox"
    mail_from: str = "PeerTest Hub <no-reply@peertest.local>"
    sendgrid_api_key: str = ""
    sendgrid_host: str = "https://api.sendgrid.com"

    s3_endpoint_url: str = ""
    s3_bucket: str = "peertest-evidence"
    s3_region: str = "us-east-1"

    stripe_secret_key: str = "sk_test_local"
    stripe_api_base: str = ""  # empty means the real Stripe API
    stripe_webhook_secret: str = "whsec_local_dev"
    stripe_webhook_tolerance_seconds: int = 300
    stripe_timeout_seconds: float = 30.0
    # localstripe has no Connect: the embedded scripts export STRIPE_SIMULATE_CONNECT=true.
    stripe_simulate_connect: bool = Field(default=False, description="simulate Connect accounts and transfers")
    membership_plan_id: str = "peertest-membership-monthly"
    membership_price_cents: int = 2900

    platform_fee_bps: int = 1000  # 10 % on top of the payout
    daily_deposit_limit_cents: int = 100_000
    min_deposit_cents: int = 500
    max_deposit_cents: int = 100_000
    refund_window_days: int = 90
    min_payout_cents: int = 1_000
    # A transfer is retried with its original idempotency key for this long; Stripe keeps keys for
    # 24 h, so older ones are dead-lettered for operators (reconciliation lists the payout as stuck).
    payout_retry_max_age_seconds: int = 23 * 3600
    membership_grace_seconds: int = 24 * 3600  # renewal webhooks may land a little after the period end
    reconciliation_window_days: int = 7
    idempotency_ttl_seconds: int = 24 * 3600
    # A key whose request died mid-flight is taken over (and resumed) after this lease.
    idempotency_lease_seconds: int = 60

    # Durable after-commit work (app/outbox): the sweep re-sends due tasks whose queue hint was lost.
    outbox_sweep_seconds: int = 10
    outbox_lease_seconds: int = 300  # a task running longer is presumed dead and retried
    outbox_retry_base_seconds: float = 5.0
    outbox_retry_max_seconds: float = 3600.0
    outbox_max_attempts: int = 12
    outbox_max_age_seconds: int = 48 * 3600  # older failing tasks are dead-lettered
    deposit_abandon_after_seconds: int = 24 * 3600  # unpaid deposits are cancelled and free their quota
    health_probe_seconds: float = 5.0
    # Test seams (app/faults.py): "point=action,...". Ignored outside dev and test.
    faults: str = ""

    @property
    def is_production_like(self) -> bool:
        return self.environment in ("staging", "production")

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> "Settings":
        if not self.is_production_like:
            return self
        weak = {
            "JWT_SECRET": self.jwt_secret in ("", DEV_SECRET) or len(self.jwt_secret) < 32,
            "ENCRYPTION_KEY": self.encryption_key in ("", DEV_ENCRYPTION_KEY),
            "STRIPE_WEBHOOK_SECRET": self.stripe_webhook_secret in ("", "whsec_local_dev"),
            "STRIPE_SECRET_KEY": self.stripe_secret_key in ("", "sk_test_local"),
        }
        bad = [name for name, is_weak in weak.items() if is_weak]
        if bad:
            raise ValueError(f"refusing to start in {self.environment}: set strong values for {', '.join(bad)}")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
