"""Error reports never carry request bodies, credentials or job arguments."""

from app.kit.error_reporting import scrub


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
