"""One settings object for the whole app; every value can come from the environment."""

import ipaddress
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-insecure-secret-change-me-0123456789"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(setting: str) -> tuple[bool, tuple[Network, ...]]:
    """FORWARDED_ALLOW_IPS: (trust everyone, the trusted networks); ValueError names a bad entry."""
    entries = [item.strip() for item in setting.split(",") if item.strip()]
    networks = []
    for entry in entries:
        if entry != "*":
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"FORWARDED_ALLOW_IPS entry {entry!r} is not an IP address or CIDR") from None
    return "*" in entries, tuple(networks)
DEV_ENCRYPTION_KEY = "ZGV2LWluc2VjdXJlLWtleS0zMi1ieXRlcy1sb25nISE="  # 32 bytes, base64


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Fails closed: a forgotten ENVIRONMENT means production, which refuses dev secrets and flags.
    # scripts/run, scripts/test and scripts/bench set it explicitly.
    environment: Literal["dev", "test", "staging", "production"] = "production"
    app_name: str = "peertest-hub"
    public_base_url: str = "http://127.0.0.1:8000"
    frontend_base_url: str = "http://127.0.0.1:5173"
    # Browser origins allowed to call the API; production must name them (no default, no "*").
    cors_origins: list[str] = ["http://localhost:5173", "http://127.0.0.1:5173"]
    # Proxies whose X-Forwarded-For is believed: comma-separated IPs or CIDRs, "*" for any, "" for none.
    forwarded_allow_ips: str = ""
    log_level: str = "INFO"
    metrics_token: str = ""  # /metrics needs "Authorization: Bearer <token>"; required in production
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
    encryption_key: str = DEV_ENCRYPTION_KEY  # base64 of 32 bytes, AES-256-GCM; encrypts new data
    encryption_key_id: str = Field(default="k1", pattern=r"^[A-Za-z0-9_-]{1,16}$")
    # Retired keys still able to decrypt, "id:base64key,id:base64key" (rotation: see README)
    encryption_old_keys: str = ""
    password_min_length: int = 10
    login_rate_per_minute: int = 5  # per client IP
    # Per account: after this many failures in a row, each new failure locks the account's logins for
    # a backoff that doubles from 2 s up to the cap. A success or a password reset clears it.
    login_failures_before_backoff: int = 5
    login_backoff_max_seconds: int = 900
    # Routes that send email (register, resend verification, reset request) and reset confirm.
    email_rate_per_ip_per_hour: int = 20
    email_rate_per_address_per_hour: int = 3
    reset_confirm_rate_per_ip_per_minute: int = 10
    refresh_family_max_age_seconds: int = 30 * 24 * 3600  # a login's refresh chain ends after this
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

    @property
    def docs_enabled(self) -> bool:
        return not self.is_production_like

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxy_addresses(cls, setting: str) -> str:
        parse_networks(setting)
        return setting

    @field_validator("cors_origins")
    @classmethod
    def _plain_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            parsed = urlsplit(origin)
            if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("",) \
                    or parsed.query or parsed.fragment or parsed.username:
                raise ValueError(f"CORS origin {origin!r} must be scheme://host[:port], without a path or '*'")
        return origins

    @model_validator(mode="after")
    def _fail_closed(self) -> "Settings":
        refused = self._weak_secrets() + self._production_only_problems()
        if refused:
            raise ValueError(f"refusing to start in {self.environment}: " + "; ".join(refused))
        return self

    def _weak_secrets(self) -> list[str]:
        if not self.is_production_like:
            return []
        weak = {
            "JWT_SECRET": self.jwt_secret in ("", DEV_SECRET) or len(self.jwt_secret) < 32,
            "ENCRYPTION_KEY": self.encryption_key in ("", DEV_ENCRYPTION_KEY),
            "STRIPE_WEBHOOK_SECRET": self.stripe_webhook_secret in ("", "whsec_local_dev"),
            "STRIPE_SECRET_KEY": self.stripe_secret_key in ("", "sk_test_local"),
        }
        bad = [name for name, is_weak in weak.items() if is_weak]
        return [f"set strong values for {', '.join(bad)}"] if bad else []

    def _production_only_problems(self) -> list[str]:
        """Simulation and debugging switches, and the settings production must name itself."""
        if self.environment != "production":
            return []
        problems = {
            "STRIPE_SIMULATE_CONNECT must be false": self.stripe_simulate_connect,
            "FAULTS must be empty": bool(self.faults),
            "EXPOSE_DB_COMMANDS must be false": self.expose_db_commands,
            "MAIL_BACKEND must be sendgrid (outbox writes mail to disk)": self.mail_backend != "sendgrid",
            "STRIPE_API_BASE must be https (no local Stripe stand-in)":
                bool(self.stripe_api_base) and not self.stripe_api_base.startswith("https://"),
            "SENDGRID_API_KEY must be set": self.mail_backend == "sendgrid" and not self.sendgrid_api_key,
            "METRICS_TOKEN must be set": not self.metrics_token,
            "CORS_ORIGINS must be set explicitly": "cors_origins" not in self.model_fields_set,
            "FORWARDED_ALLOW_IPS must name the proxies, not '*' (clients would choose their own address)":
                parse_networks(self.forwarded_allow_ips)[0],
        }
        return [problem for problem, bad in problems.items() if bad]


@lru_cache
def get_settings() -> Settings:
    return Settings()
