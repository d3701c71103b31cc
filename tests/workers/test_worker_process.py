"""The real worker process: jobs leave the API, and `python -m workers.worker` runs them, async
tasks included (each opens its own database client in a fresh event loop)."""

import asyncio
import os
import sys
from pathlib import Path

from app.payments.models import InboxEvent
from tests.fixtures.factories import outbox, post_stripe_event, stripe_event, unique_email

ROOT = Path(__file__).resolve().parents[2]


async def run_worker_burst() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.worker", "--burst", cwd=ROOT, env={**os.environ},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, output.decode()[-2000:]


async def test_worker_sends_email_and_processes_webhook_events(client):
    email = unique_email("worker")
    resp = await client.post("/api/auth/register", json={"email": email, "password": "correct-horse-42",
                                                          "role": "tester", "display_name": "W"})
    assert resp.status_code == 201
    event = stripe_event("customer.created", {"id": "cus_123", "object": "customer"})
    assert (await post_stripe_event(client, event)).status_code == 200
    assert outbox(email) == []

    await run_worker_burst()

    [mail] = outbox(email)
    assert "Verify" in mail["Subject"]
    [record] = await InboxEvent.find_all().to_list()
    assert record.status == "ignored" and record.attempts == 1  # no handler for customer.created
