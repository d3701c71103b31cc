"""The transactional outbox (app/outbox): written with the commit, hinted after it, claimed under a
lease, retried with jittered backoff, dead-lettered, swept, replayed, and shown to admins.

The task functions below are referenced by dotted path, as real tasks are; what they did is kept in
module-level state that every test starts empty."""

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest

from app.db import run_in_transaction
from app.errors import NotFound
from app.kit.queue import HIGH, get_queue, safe_job_id
from app.kit.timeutil import as_utc, utcnow
from app.outbox import service as outbox
from app.outbox.models import OutboxTask
from tests.fixtures.factories import drain_jobs

HERE = __name__  # "tests.outbox.test_outbox"
CALLS: list[tuple[str, tuple[Any, ...], int]] = []  # (task, args, current_attempt())
FAIL_UNTIL_ATTEMPT = {"value": 0}  # flaky_task fails while current_attempt() < this
GATE: dict[str, asyncio.Event] = {}
MS = timedelta(milliseconds=2)  # Mongo keeps milliseconds


@pytest.fixture(autouse=True)
def fresh_task_state():
    CALLS.clear()
    FAIL_UNTIL_ATTEMPT["value"] = 0
    GATE.clear()
    yield
    for event in GATE.values():  # never leave a task function waiting
        event.set()


# -- task functions -----------------------------------------------------------------------------
async def record_task(*args: Any) -> None:
    CALLS.append(("record", args, outbox.current_run()))


async def failing_task(*args: Any) -> None:
    CALLS.append(("failing", args, outbox.current_run()))
    raise RuntimeError("boom")


async def retry_later_task() -> None:
    CALLS.append(("retry_later", (), outbox.current_run()))
    raise outbox.RetryLater("the payout has no transfer yet")


async def flaky_task(name: str) -> None:
    CALLS.append(("flaky", (name,), outbox.current_run()))
    if outbox.current_run() < FAIL_UNTIL_ATTEMPT["value"]:
        raise RuntimeError(f"flaky failure on attempt {outbox.current_run()}")


async def sleepy_task(seconds: float) -> None:
    CALLS.append(("sleepy", (seconds,), outbox.current_run()))
    await asyncio.sleep(seconds)


async def gated_task(name: str) -> None:
    """The first run waits for the test to open GATE["release"]; later runs pass straight through.
    A first run let go after GATE["fail"] was set fails (a worker that lost its lease and then errs)."""
    first = not any(c[0] == "gated" for c in CALLS)
    CALLS.append(("gated", (name,), outbox.current_run()))
    if first:
        GATE["started"].set()
        await GATE["release"].wait()
        if "fail" in GATE:
            raise RuntimeError("the slow first worker failed late")


# -- helpers ------------------------------------------------------------------------------------
async def add(key: str, fn: str, *args: Any, **options: Any) -> OutboxTask:
    """One outbox task committed on its own, as a service adds it inside its transaction."""
    await run_in_transaction(lambda s: outbox.add(s, f"{HERE}.{fn}", *args, key=key, **options))
    return await OutboxTask.get(key)


async def make_due(key: str, **fields: Any) -> None:
    """Time passes: its backoff is over (and any lease it had ran out)."""
    await OutboxTask.get_pymongo_collection().update_one(
        {"_id": key}, {"$set": {"due_at": utcnow() - timedelta(seconds=1), "lease_until": None, **fields}})


def queued(queue: str = HIGH) -> list[tuple[str, str, tuple]]:
    return [(job.id, job.func_name, tuple(job.args)) for job in get_queue(queue).jobs]


def hint_of(key: str) -> tuple[str, str, tuple]:
    """The queue message that asks a worker to run the task now."""
    return (safe_job_id(f"outbox:{key}"), outbox.RUN_TASK, (key,))


def delay_of(task: OutboxTask, before, after) -> tuple[float, float]:
    """The backoff a failure chose, bounded by the clock before and after the execute()."""
    due = as_utc(task.due_at)
    return (due - after - MS).total_seconds(), (due - before + MS).total_seconds()


async def run_failures(key: str, times: int) -> list[tuple[str, OutboxTask, Any, Any]]:
    outcomes = []
    for _ in range(times):
        await make_due(key)
        before = utcnow()
        outcome = await outbox.execute(key)
        after = utcnow()
        outcomes.append((outcome, await OutboxTask.get(key), before, after))
    return outcomes


# -- adding and hinting -------------------------------------------------------------------------
async def test_add_writes_the_task_once_and_hints_a_worker_after_the_commit(settings):
    seen_in_transaction: list = []

    async def body(session):
        await outbox.add(session, f"{HERE}.record_task", 7, "seven", key="t:add", label="adds seven")
        seen_in_transaction.append(queued())  # the hint waits for the commit

    await run_in_transaction(body)
    assert seen_in_transaction == [[]]
    assert queued() == [hint_of("t:add")]
    task = await OutboxTask.get("t:add")
    assert (task.task, task.args, task.queue, task.label) == (f"{HERE}.record_task", [7, "seven"], HIGH, "adds seven")
    assert (task.status, task.attempts, task.max_attempts) == ("pending", 0, settings.outbox_max_attempts)
    assert task.lease_until is None and task.expires_at is None
    age = as_utc(task.give_up_at) - as_utc(task.created_at)
    assert abs(age.total_seconds() - settings.outbox_max_age_seconds) < 0.01

    # The same key again, even with other arguments, changes nothing and runs nothing twice.
    again = await add("t:add", "record_task", 8, "eight")
    assert again.args == [7, "seven"] and await OutboxTask.count() == 1
    assert queued() == [hint_of("t:add")]  # one job: the waiting hint is not duplicated

    await drain_jobs()
    assert CALLS == [("record", (7, "seven"), 1)]
    done = await OutboxTask.get("t:add")
    assert (done.status, done.attempts, done.last_error, done.lease_until) == ("done", 1, None, None)
    assert done.finished_at is not None
    assert as_utc(done.expires_at) - as_utc(done.finished_at) == outbox.DONE_KEPT_FOR

    # A task already done is skipped, also when a late hint or an add of its key arrives.
    await add("t:add", "record_task", 9)
    assert await outbox.execute("t:add") == "skipped"
    await drain_jobs()
    assert len(CALLS) == 1 and (await OutboxTask.get("t:add")).status == "done"


async def test_a_rolled_back_transaction_leaves_no_task_and_no_hint():
    class Abort(Exception):
        pass

    async def body(session):
        await outbox.add(session, f"{HERE}.record_task", key="t:rolled-back")
        raise Abort()

    with pytest.raises(Abort):
        await run_in_transaction(body)
    assert await OutboxTask.get("t:rolled-back") is None and queued() == []


async def test_hint_false_writes_without_enqueueing_and_the_caller_executes_inline():
    await add("t:inline", "record_task", "x", hint=False)
    assert queued() == []
    assert await outbox.execute("t:inline") == "done"
    assert CALLS == [("record", ("x",), 1)]


# -- failures, backoff, dead letters ------------------------------------------------------------
def test_backoff_stays_within_half_and_all_of_the_capped_exponential(settings):
    settings.outbox_retry_base_seconds = 4.0
    settings.outbox_retry_max_seconds = 50.0
    for attempts, ceiling in [(0, 4), (1, 4), (2, 8), (3, 16), (4, 32), (5, 50), (12, 50)]:
        delays = [outbox.backoff_seconds(attempts) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempts, min(delays), max(delays))
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not one fixed value


async def test_a_failing_task_backs_off_exponentially_then_is_dead_lettered(settings):
    settings.outbox_retry_base_seconds = 10.0
    settings.outbox_retry_max_seconds = 30.0
    await add("t:fail", "failing_task", "a", max_attempts=5, hint=False)

    outcomes = await run_failures("t:fail", 4)
    ceilings = [10, 20, 30, 30]  # 10 * 2^(n-1), capped at 30
    for n, ((outcome, task, before, after), ceiling) in enumerate(zip(outcomes, ceilings, strict=True), start=1):
        assert outcome == "retry"
        assert (task.status, task.attempts, task.lease_until) == ("pending", n, None)
        assert task.last_error == "RuntimeError: boom"
        low, high = delay_of(task, before, after)
        assert low >= ceiling / 2 - 0.5 and high <= ceiling + 0.5, (n, low, high)  # within [c/2, c]
    # Not due yet: a hint that arrives during the backoff does nothing.
    assert await outbox.execute("t:fail") == "skipped"

    [(outcome, task, _, _)] = await run_failures("t:fail", 1)
    assert outcome == "dead"
    assert (task.status, task.attempts, task.lease_until) == ("dead", 5, None)
    assert task.last_error == "RuntimeError: boom" and task.expires_at is None  # kept until an operator acts
    assert [c[2] for c in CALLS] == [1, 2, 3, 4, 5]
    await make_due("t:fail")
    assert await outbox.execute("t:fail") == "skipped"  # dead letters wait for a replay
    assert len(CALLS) == 5


async def test_the_default_max_attempts_comes_from_the_settings(settings):
    settings.outbox_max_attempts = 2
    settings.outbox_retry_base_seconds = 0.01
    await add("t:two-tries", "failing_task", hint=False)
    assert [o for o, *_ in await run_failures("t:two-tries", 2)] == ["retry", "dead"]


async def test_a_task_failing_past_its_give_up_time_is_dead_lettered_at_once():
    task = await add("t:too-old", "failing_task", max_attempts=12, max_age_seconds=3600, hint=False)
    await make_due("t:too-old", give_up_at=as_utc(task.created_at) - timedelta(seconds=1))
    assert await outbox.execute("t:too-old") == "dead"
    dead = await OutboxTask.get("t:too-old")
    assert (dead.status, dead.attempts, dead.last_error) == ("dead", 1, "RuntimeError: boom")


async def test_retry_later_is_a_failure_without_a_traceback(caplog, settings):
    settings.outbox_retry_base_seconds = 10.0
    await add("t:later", "retry_later_task", hint=False)
    await add("t:broken", "failing_task", hint=False)
    with caplog.at_level(logging.WARNING, logger="app.outbox.service"):
        before = utcnow()
        assert await outbox.execute("t:later") == "retry"
        after = utcnow()
        assert await outbox.execute("t:broken") == "retry"

    later = await OutboxTask.get("t:later")
    assert (later.status, later.attempts) == ("pending", 1)
    assert later.last_error == "RetryLater: the payout has no transfer yet"
    low, high = delay_of(later, before, after)
    assert low >= 5 - 0.5 and high <= 10 + 0.5
    by_task = {r.getMessage().split()[2]: r for r in caplog.records if r.name == "app.outbox.service"}
    assert not by_task["t:later"].exc_info  # an expected wait: no traceback
    assert by_task["t:broken"].exc_info  # a real error keeps its traceback


async def test_current_attempt_is_reported_inside_the_task(settings):
    settings.outbox_retry_base_seconds = 0.01
    FAIL_UNTIL_ATTEMPT["value"] = 3
    await add("t:flaky", "flaky_task", "f", hint=False)
    outcomes = []
    for _ in range(3):
        await make_due("t:flaky")
        outcomes.append(await outbox.execute("t:flaky"))
    assert outcomes == ["retry", "retry", "done"]
    assert CALLS == [("flaky", ("f",), 1), ("flaky", ("f",), 2), ("flaky", ("f",), 3)]
    task = await OutboxTask.get("t:flaky")
    assert (task.status, task.attempts, task.last_error) == ("done", 3, None)
    assert outbox.current_run() == 1  # outside any task: the default, nothing leaked


# -- leases ---------------------------------------------------------------------------------------
async def test_two_concurrent_executions_run_the_task_once():
    await add("t:sleepy", "sleepy_task", 0.3, hint=False)
    outcomes = await asyncio.gather(outbox.execute("t:sleepy"), outbox.execute("t:sleepy"))
    assert sorted(outcomes) == ["done", "skipped"]
    assert CALLS == [("sleepy", (0.3,), 1)]
    task = await OutboxTask.get("t:sleepy")
    assert (task.status, task.attempts) == ("done", 1)


async def test_a_held_lease_blocks_others_and_an_expired_one_is_taken_over():
    GATE.update(started=asyncio.Event(), release=asyncio.Event())
    await add("t:gated", "gated_task", "g", hint=False)
    first = asyncio.create_task(outbox.execute("t:gated"))
    await asyncio.wait_for(GATE["started"].wait(), 10)

    assert await outbox.execute("t:gated") == "skipped"  # its lease is held
    running = await OutboxTask.get("t:gated")
    assert running.lease_until is not None and as_utc(running.lease_until) > utcnow()

    # The first worker is presumed dead once its lease runs out: another one claims the task.
    await OutboxTask.get_pymongo_collection().update_one(
        {"_id": "t:gated"}, {"$set": {"lease_until": utcnow() - timedelta(seconds=1)}})
    assert await outbox.execute("t:gated") == "done"
    taken_over = await OutboxTask.get("t:gated")
    assert (taken_over.status, taken_over.attempts) == ("done", 2)
    assert taken_over.lease_token != running.lease_token

    # The slow first worker finally fails: its outcome no longer counts.
    GATE["fail"] = asyncio.Event()
    GATE["release"].set()
    assert await asyncio.wait_for(first, 10) == "skipped"
    after = await OutboxTask.get("t:gated")
    assert (after.status, after.attempts, after.last_error) == ("done", 2, None)
    assert [c[2] for c in CALLS] == [1, 2]


# -- the sweep ------------------------------------------------------------------------------------
async def test_sweep_hints_only_due_unleased_pending_tasks_past_the_grace(settings):
    settings.outbox_sweep_seconds = 60
    now = utcnow()
    long_ago, lately = now - timedelta(seconds=120), now - timedelta(seconds=10)
    cases = {
        "t:overdue": {"due_at": long_ago},
        "t:lease-expired": {"due_at": long_ago, "lease_until": now - timedelta(seconds=1)},
        "t:within-grace": {"due_at": lately},  # its own hint may still be on the way
        "t:future": {"due_at": now + timedelta(seconds=60)},
        "t:leased": {"due_at": long_ago, "lease_until": now + timedelta(seconds=60)},
        "t:done": {"due_at": long_ago, "status": "done"},
        "t:dead": {"due_at": long_ago, "status": "dead"},
    }
    for key, fields in cases.items():
        await add(key, "record_task", key, hint=False)
        await OutboxTask.get_pymongo_collection().update_one({"_id": key}, {"$set": fields})
    assert queued() == []

    assert await outbox.sweep() == 2
    assert sorted(queued()) == sorted([hint_of("t:overdue"), hint_of("t:lease-expired")])
    assert await outbox.sweep() == 2  # a repeated tick finds them again but queues nothing new
    assert len(queued()) == 2

    await drain_jobs()
    assert sorted(c[1][0] for c in CALLS) == ["t:lease-expired", "t:overdue"]
    assert await outbox.sweep() == 0 and queued() == []


# -- operators ------------------------------------------------------------------------------------
async def test_replay_gives_a_dead_task_fresh_attempts_and_runs_it_now(settings):
    await add("t:replay", "flaky_task", "r", max_attempts=1, hint=False)
    FAIL_UNTIL_ATTEMPT["value"] = 99
    assert await outbox.execute("t:replay") == "dead"

    FAIL_UNTIL_ATTEMPT["value"] = 0  # the cause is fixed
    before = utcnow()
    replayed = await outbox.replay("t:replay")
    assert (replayed.status, replayed.attempts, replayed.lease_until) == ("pending", 0, None)
    assert before - MS <= as_utc(replayed.due_at) <= utcnow() + MS
    age = (as_utc(replayed.give_up_at) - as_utc(replayed.due_at)).total_seconds()
    assert abs(age - settings.outbox_max_age_seconds) < 0.01
    assert queued() == [hint_of("t:replay")]

    await drain_jobs()
    task = await OutboxTask.get("t:replay")
    assert (task.status, task.attempts, task.last_error) == ("done", 1, None)
    assert task.runs == 2 and [c[2] for c in CALLS] == [1, 2]  # fresh attempts, but the run count goes on

    with pytest.raises(outbox.TaskNotReplayable) as refused:
        await outbox.replay("t:replay")
    assert refused.value.status_code == 409 and refused.value.detail == {"status": "done"}
    with pytest.raises(NotFound):
        await outbox.replay("t:no-such-task")
    assert await outbox.revive("t:replay") is None
    assert await outbox.revive("t:no-such-task") is None


async def test_replay_of_a_waiting_task_makes_it_due_now_with_fresh_attempts(settings):
    settings.outbox_retry_base_seconds = 600.0
    await add("t:waiting", "failing_task", hint=False)
    assert await outbox.execute("t:waiting") == "retry"
    assert as_utc((await OutboxTask.get("t:waiting")).due_at) > utcnow() + timedelta(seconds=200)

    revived = await outbox.revive("t:waiting")
    assert (revived.status, revived.attempts, revived.runs) == ("pending", 0, 1)
    assert as_utc(revived.due_at) <= utcnow() + MS
    assert queued() == [hint_of("t:waiting")]


async def test_done_tasks_expire_through_a_ttl_index():
    indexes = await OutboxTask.get_pymongo_collection().index_information()
    ttl = [spec for spec in indexes.values() if spec["key"] == [("expires_at", 1)]]
    assert len(ttl) == 1 and ttl[0].get("expireAfterSeconds") == 0

    await add("t:kept", "failing_task", max_attempts=1, hint=False)
    await add("t:finished", "record_task", hint=False)
    await outbox.execute("t:kept")
    await outbox.execute("t:finished")
    assert (await OutboxTask.get("t:kept")).expires_at is None  # a dead letter is never dropped
    assert (await OutboxTask.get("t:finished")).expires_at is not None


# -- the admin API ----------------------------------------------------------------------------------
async def test_admin_lists_filters_pages_shows_and_replays_tasks(client, actors):
    admin = await actors.admin()
    headers = admin["headers"]
    for n in range(5):
        await add(f"t:list:{n}", "record_task", n, hint=False)
        await asyncio.sleep(0.003)  # distinct creation instants: newest first is well defined
    for n in (1, 3):
        await OutboxTask.get_pymongo_collection().update_one(
            {"_id": f"t:list:{n}"}, {"$set": {"status": "dead", "last_error": "RuntimeError: boom"}})

    everything = await client.get("/api/admin/outbox", headers=headers)
    assert everything.status_code == 200
    assert [t["id"] for t in everything.json()["items"]] == [f"t:list:{n}" for n in (4, 3, 2, 1, 0)]
    assert everything.json()["next"] is None

    dead = (await client.get("/api/admin/outbox", params={"status": "dead"}, headers=headers)).json()
    assert [t["id"] for t in dead["items"]] == ["t:list:3", "t:list:1"]
    assert {t["last_error"] for t in dead["items"]} == {"RuntimeError: boom"}
    pending = (await client.get("/api/admin/outbox", params={"status": "pending"}, headers=headers)).json()
    assert [t["id"] for t in pending["items"]] == ["t:list:4", "t:list:2", "t:list:0"]
    bad = await client.get("/api/admin/outbox", params={"status": "stuck"}, headers=headers)
    assert bad.status_code == 422

    seen, cursor = [], None
    for _ in range(5):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/admin/outbox", params=params, headers=headers)).json()
        assert len(page["items"]) <= 2
        seen += [t["id"] for t in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [f"t:list:{n}" for n in (4, 3, 2, 1, 0)]

    one = await client.get("/api/admin/outbox/t:list:3", headers=headers)
    assert one.status_code == 200
    body = one.json()
    assert (body["id"], body["status"], body["task"], body["args"]) == ("t:list:3", "dead", f"{HERE}.record_task", [3])
    assert {"attempts", "max_attempts", "due_at", "give_up_at", "created_at", "label", "queue"} <= set(body)
    assert (await client.get("/api/admin/outbox/t:none", headers=headers)).status_code == 404

    replayed = await client.post("/api/admin/outbox/t:list:3/replay", headers=headers)
    assert replayed.status_code == 202, replayed.text
    assert (replayed.json()["status"], replayed.json()["attempts"]) == ("pending", 0)
    await drain_jobs()
    assert CALLS == [("record", (3,), 1)]
    assert (await client.get("/api/admin/outbox/t:list:3", headers=headers)).json()["status"] == "done"
    again = await client.post("/api/admin/outbox/t:list:3/replay", headers=headers)
    assert again.status_code == 409 and again.json()["error"] == "task_not_replayable"
    missing = await client.post("/api/admin/outbox/t:none/replay", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


async def test_admin_routes_need_an_admin(client, actors):
    await add("t:private", "record_task", hint=False)
    builder = await actors.signed_in("builder")
    calls = [("GET", "/api/admin/outbox"), ("GET", "/api/admin/outbox/t:private"),
             ("POST", "/api/admin/outbox/t:private/replay")]
    for method, path in calls:
        assert (await client.request(method, path, headers=builder["headers"])).status_code == 403, path
        assert (await client.request(method, path)).status_code == 401, path
    untouched = await OutboxTask.get("t:private")
    assert (untouched.status, untouched.attempts, untouched.updated_at) == ("pending", 0, untouched.created_at)
    assert queued() == []  # no replay was hinted
