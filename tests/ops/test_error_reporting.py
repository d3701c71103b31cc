"""Error reports never carry request bodies, credentials or job arguments."""

import os

import sentry_sdk

from app.auth import service as auth_service
from app.kit import error_reporting
from app.kit.error_reporting import scrub
from tests.fixtures.factories import unique_email


def test_scrub_removes_bodies_credentials_and_job_arguments():
    event = {
        "request": {"url": "http://api/api/auth/login", "method": "POST",
                    "data": {"email": "a@b.c", "password": "hunter2-secret"}, "cookies": {"s": "1"},
                    "query_string": "token=abc", "headers": {"Authorization": "Bearer eyJ", "Idempotency-Key": "k",
                                                             "User-Agent": "ua"}},
        "extra": {"rq-job": {"func": "app.outbox.tasks.run", "args": ["secret"], "kwargs": {"t": 1},
                             "description": "run('secret')", "job_id": "j1"}},
    }
    cleaned = scrub(event)
    assert "hunter2" not in str(cleaned) and "secret" not in str(cleaned) and "eyJ" not in str(cleaned)
    assert cleaned["request"]["headers"] == {"User-Agent": "ua"}
    assert cleaned["request"]["url"] == "http://api/api/auth/login"
    assert cleaned["extra"]["rq-job"] == {"func": "app.outbox.tasks.run", "job_id": "j1"}


async def test_sentry_events_carry_no_passwords(client, settings, monkeypatch):
    """A registration fails after the password was parsed: the event Sentry would send (stack-frame
    locals included, if they were on) holds no trace of the password."""
    events: list = []
    real_init = sentry_sdk.init
    monkeypatch.setattr(sentry_sdk, "init", lambda **kw: real_init(**kw, transport=events.append))
    settings.sentry_dsn = "https://public@sentry.example/1"
    error_reporting.init(settings)  # exactly the app's options
    try:
        async def broken_hash(_password: str) -> str:
            raise RuntimeError("argon2 blew up")

        monkeypatch.setattr(auth_service, "hash_password", broken_hash)
        secret = f"Sup3r-{os.urandom(6).hex()}-77"  # made at run time: the test's own source lines are sent
        resp = await client.post("/api/auth/register", json={
            "email": unique_email(), "password": secret, "role": "tester", "display_name": "Tess"})
        assert resp.status_code == 500
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        real_init(dsn=None)
    assert events, "the failure reached no Sentry event"
    assert secret not in repr(events)
