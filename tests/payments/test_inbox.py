"""The webhook inbox as durable truth: failing handlers are retried with backoff, exhausted ones
are dead-lettered where admins see them, and a fix plus a sweep or a replay recovers them."""

import asyncio
import os
import sys

from app.integrations import payments
from app.ops import health
from app.outbox import service as outbox
from app.outbox.models import OutboxTask
from app.payments.models import InboxEvent
from tests.fixtures.factories import drain_jobs, post_stripe_event, settle_outbox, stripe_event
from tests.test_cli import ROOT
from tests.wallet.conftest import WalletDriver, intent, pay


class HandlerBug(RuntimeError):
    pass


async def paid_event(wallet: WalletDriver, cents: int) -> tuple[dict, bytes]:
    body = (await wallet.deposit(cents)).json()
    await pay(body["payment_intent_id"])
    return body, stripe_event("payment_intent.succeeded", await intent(body["payment_intent_id"]))


def task_of(event_body: bytes) -> str:
    import json

    return f"inbox:stripe:{json.loads(event_body)['id']}"


async def test_a_failing_handler_is_retried_then_dead_lettered_and_replayed(client, actors, wallet, settings,
                                                                            monkeypatch):
    settings.outbox_max_attempts = 3
    settings.outbox_sweep_seconds = 0
    settings.outbox_retry_base_seconds = 0.01
    real_retrieve = payments.retrieve_payment_intent

    async def broken(*_, **__):
        raise HandlerBug("the handler has a bug")

    _, doomed_event = await paid_event(wallet, 3_000)
    _, recovering_event = await paid_event(wallet, 2_000)
    monkeypatch.setattr(payments, "retrieve_payment_intent", broken)
    # One event fails on every try until its tries run out: dead-lettered.
    assert (await post_stripe_event(client, doomed_event)).status_code == 200
    await drain_jobs()
    assert await settle_outbox() == ["retry", "dead"]
    doomed_task = await OutboxTask.get(task_of(doomed_event))
    assert (doomed_task.status, doomed_task.attempts) == ("dead", 3) and "HandlerBug" in doomed_task.last_error

    # Another fails twice; the bug is fixed before its tries run out, and the sweep recovers it.
    await post_stripe_event(client, recovering_event)
    await drain_jobs()
    assert await settle_outbox(rounds=1) == ["retry"]
    monkeypatch.setattr(payments, "retrieve_payment_intent", real_retrieve)
    await asyncio.sleep(0.05)  # its backoff
    assert await outbox.sweep() == 1  # only the recovering one: the dead one waits for an operator
    await drain_jobs()
    assert (await OutboxTask.get(task_of(recovering_event))).status == "done"
    assert (await wallet.summary())["available_cents"] == 2_000

    # Admins see the dead letter, in the outbox, in the event list, and in /health.
    admin = await actors.admin()
    dead = (await client.get("/api/admin/outbox?status=dead", headers=admin["headers"])).json()["items"]
    assert [t["id"] for t in dead] == [task_of(doomed_event)] and dead[0]["label"].startswith("stripe payment_intent")
    failed = (await client.get("/api/admin/webhook-events?status=failed", headers=admin["headers"])).json()["items"]
    assert [e["event_id"] for e in failed] == [task_of(doomed_event).rsplit(":", 1)[1]]
    assert (await health.probe())["checks"]["outbox"]["dead"] == 1
    assert (await client.get("/api/admin/outbox?status=dead", headers=wallet.headers)).status_code == 403

    replayed = await client.post(f"/api/admin/webhook-events/{failed[0]['event_id']}/replay", headers=admin["headers"])
    assert replayed.status_code == 202 and replayed.json()["status"] == "pending"
    assert replayed.json()["attempts"] == 0
    await drain_jobs()
    assert (await OutboxTask.get(task_of(doomed_event))).status == "done"
    assert (await wallet.summary())["available_cents"] == 5_000
    [processed] = await InboxEvent.find(InboxEvent.event_id == failed[0]["event_id"]).to_list()
    assert processed.status == "processed"
    again = await client.post(f"/api/admin/outbox/{task_of(doomed_event)}/replay", headers=admin["headers"])
    assert again.status_code == 409 and again.json()["error"] == "task_not_replayable"
    missing = await client.post("/api/admin/outbox/nope/replay", headers=admin["headers"])
    assert missing.status_code == 404


async def test_a_redelivery_of_an_unprocessed_event_makes_it_due_again(client, wallet, settings, monkeypatch):
    async def unreachable(*_, **__):
        from app.errors import PaymentProviderError

        raise PaymentProviderError("provider down")

    real = payments.retrieve_payment_intent
    _, body = await paid_event(wallet, 1_000)
    monkeypatch.setattr(payments, "retrieve_payment_intent", unreachable)
    await post_stripe_event(client, body)
    await drain_jobs()
    task = await OutboxTask.get(task_of(body))
    assert task.status == "pending" and task.due_at > task.created_at  # backing off

    monkeypatch.setattr(payments, "retrieve_payment_intent", real)
    assert (await post_stripe_event(client, body)).status_code == 200  # the provider redelivers
    await drain_jobs()  # the redelivery hinted it at once, without waiting for the backoff
    assert (await OutboxTask.get(task_of(body))).status == "done"
    assert (await wallet.summary())["available_cents"] == 1_000
    assert await InboxEvent.count() == 1


async def test_the_cli_lists_and_replays_dead_letters(wallet, client, settings, monkeypatch):
    settings.outbox_max_attempts = 1

    async def broken(*_, **__):
        raise HandlerBug("still broken")

    _, body = await paid_event(wallet, 1_500)
    monkeypatch.setattr(payments, "retrieve_payment_intent", broken)
    await post_stripe_event(client, body)
    await drain_jobs()
    assert (await OutboxTask.get(task_of(body))).status == "dead"
    monkeypatch.undo()

    env = {**os.environ, "COLUMNS": "250"}
    listed = await asyncio.create_subprocess_exec(sys.executable, "-m", "app.cli", "outbox", "list", cwd=ROOT, env=env,
                                                  stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = (await listed.communicate())[0].decode()
    assert listed.returncode == 0 and task_of(body) in out and "HandlerBug" in out, out
    replay = await asyncio.create_subprocess_exec(sys.executable, "-m", "app.cli", "outbox", "replay", task_of(body),
                                                  cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
                                                  stderr=asyncio.subprocess.STDOUT)
    out = (await replay.communicate())[0].decode()
    assert replay.returncode == 0 and "replayed" in out, out
    await drain_jobs()  # the CLI's hint reached the same Redis
    assert (await OutboxTask.get(task_of(body))).status == "done"
    assert (await wallet.summary())["available_cents"] == 1_500
