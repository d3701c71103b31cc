"""Durable after-commit work: the transactional outbox.

    await outbox.add(session, "app.payouts.service.execute_transfer", payout_id, key=f"payout:{payout_id}:transfer")

inside the money transaction writes the task with the state change that makes it necessary. After
the commit a queue message (a hint) asks a worker to run it at once. If that hint is lost (Redis
down, a process killed between commit and enqueue), the sweep finds the task due and sends it
again. A worker claims a task with a lease before running it, so it runs once at a time; a failure
is retried with exponential backoff and jitter, and a task that keeps failing past its attempts or
its age is dead-lettered for an operator to replay (admin endpoint or CLI).

Task functions are plain async functions of JSON-able arguments that re-read their state and act
only if it still applies: a task may run again after a crash, and must be harmless then.
"""

import contextvars
import importlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from redis.exceptions import RedisError

from app import faults
from app.config import get_settings
from app.db import after_commit, run_in_transaction
from app.errors import AppError, Conflict, NotFound
from app.kit.pagination import PageParams, paginate
from app.kit.queue import HIGH, enqueue_async
from app.kit.timeutil import as_utc, utcnow
from app.outbox.models import OutboxTask

log = logging.getLogger(__name__)
RUN_TASK = "app.outbox.tasks.run"
SWEEP_BATCH = 500
DONE_KEPT_FOR = timedelta(days=7)


_run: contextvars.ContextVar[int] = contextvars.ContextVar("outbox_run", default=1)


def current_run() -> int:
    """Which run of its task the running task function is, over the task's whole life (a replay
    keeps counting): 1 for the first. A later run may follow one that reached the provider, so it
    looks there before acting again."""
    return _run.get()


class RetryLater(Exception):
    """A task's precondition does not hold yet (e.g. an event arrived before the object it is
    about): try again after the usual backoff."""


class TaskNotReplayable(Conflict):
    code, default_detail = "task_not_replayable", "Only pending or dead-lettered tasks can be replayed."


# -- adding ---------------------------------------------------------------------------------------
async def add(session: AsyncClientSession, task: str, *args: Any, key: str, queue: str = HIGH, label: str = "",
              max_attempts: int | None = None, max_age_seconds: int | None = None, hint: bool = True) -> None:
    """Write the task in the caller's transaction (a second add of the same key is a no-op); after
    the commit, hint a worker unless `hint` is False (the caller runs it inline with execute())."""
    settings = get_settings()
    now = utcnow()
    age = max_age_seconds if max_age_seconds is not None else settings.outbox_max_age_seconds
    doc = OutboxTask(id=key, task=task, args=list(args), queue=queue, label=label or task,
                     max_attempts=max_attempts or settings.outbox_max_attempts, max_age_seconds=age, due_at=now,
                     give_up_at=now + timedelta(seconds=age), created_at=now, updated_at=now)
    fields = doc.model_dump(by_alias=True, exclude={"id"})
    await OutboxTask.get_pymongo_collection().update_one({"_id": key}, {"$setOnInsert": fields}, upsert=True,
                                                         session=session)
    if hint:
        after_commit(lambda: send_hint(key, queue))


async def send_hint(key: str, queue: str) -> bool:
    """Ask a worker to run the task now. Best effort: a lost hint only delays the task."""
    try:
        await faults.hit("outbox.before_hint")
        await enqueue_async(queue, RUN_TASK, key, job_id=f"outbox:{key}", hint=True,
                            job_timeout=get_settings().outbox_lease_seconds)
        return True
    except (RedisError, OSError) as exc:
        log.warning("outbox hint for %s not sent (%s); the sweep will send it", key, exc)
        return False


# -- running --------------------------------------------------------------------------------------
async def execute(key: str) -> str:
    """Claim the task, run it, record the outcome: "done", "retry", "dead" or "skipped" (not due,
    already done, or another worker holds its lease)."""
    task = await _claim(key)
    if task is None:
        return "skipped"
    token = _run.set(task.runs)
    try:
        await _function(task.task)(*task.args)
    except Exception as exc:  # any failure is recorded on the task and retried; it never escapes
        return await _record_failure(task, exc)
    finally:
        _run.reset(token)
    await _finish(task)
    return "done"


def _function(path: str) -> Callable[..., Awaitable[Any]]:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


async def _claim(key: str) -> OutboxTask | None:
    now = utcnow()
    lease = timedelta(seconds=get_settings().outbox_lease_seconds)

    async def claim(session: AsyncClientSession) -> OutboxTask | None:
        doc = await OutboxTask.get_pymongo_collection().find_one_and_update(
            {"_id": key, "status": "pending", "due_at": {"$lte": now},
             "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}]},
            {"$set": {"lease_until": now + lease, "lease_token": uuid.uuid4().hex, "updated_at": now},
             "$inc": {"attempts": 1, "runs": 1}},
            session=session, return_document=ReturnDocument.AFTER)
        return OutboxTask.model_validate(doc) if doc else None

    return await run_in_transaction(claim)


async def _finish(task: OutboxTask) -> None:
    now = utcnow()
    await _update_leased(task, {"status": "done", "finished_at": now, "lease_until": None, "last_error": None,
                                "expires_at": now + DONE_KEPT_FOR, "updated_at": now})


async def _record_failure(task: OutboxTask, exc: Exception) -> str:
    """Back off, or dead-letter once the attempts or the age run out, judged on the task as it is
    now (a redelivery may have given it fresh attempts while this run was failing)."""
    error = f"{type(exc).__name__}: {exc}"[:1000]

    async def record(session: AsyncClientSession) -> str:
        now = utcnow()
        coll = OutboxTask.get_pymongo_collection()
        current = await coll.find_one({"_id": task.id, "lease_token": task.lease_token}, session=session)
        if current is None:
            return "skipped"  # our lease ran out and another run owns the task now
        if current["attempts"] >= current["max_attempts"] or now >= as_utc(current["give_up_at"]):
            await coll.update_one({"_id": task.id}, {"$set": {"status": "dead", "lease_until": None,
                                                             "last_error": error, "updated_at": now}}, session=session)
            return "dead"
        delay = backoff_seconds(current["attempts"])
        await coll.update_one({"_id": task.id}, {"$set": {"due_at": now + timedelta(seconds=delay), "lease_until": None,
                                                         "last_error": error, "updated_at": now}}, session=session)
        return "retry"

    outcome = await run_in_transaction(record)
    if outcome == "dead":
        log.error("outbox task %s (%s) dead-lettered after %d attempts: %s", task.id, task.label, task.attempts,
                  error)
    elif outcome == "retry":
        log.warning("outbox task %s (%s) failed (attempt %d), will retry: %s", task.id, task.label, task.attempts,
                    error, exc_info=not isinstance(exc, RetryLater | AppError))
    return outcome


async def _update_leased(task: OutboxTask, changes: dict[str, Any]) -> None:
    """Only while we still hold the lease: a worker that took over after our lease ran out wins."""

    async def update(session: AsyncClientSession) -> None:
        await OutboxTask.get_pymongo_collection().update_one(
            {"_id": task.id, "lease_token": task.lease_token}, {"$set": changes}, session=session)

    await run_in_transaction(update)


def backoff_seconds(attempts: int) -> float:
    """Exponential backoff with full jitter, between half and all of base * 2^(attempts-1)."""
    settings = get_settings()
    ceiling = min(settings.outbox_retry_max_seconds, settings.outbox_retry_base_seconds * 2 ** max(0, attempts - 1))
    return random.uniform(ceiling / 2, ceiling)


# -- the sweep --------------------------------------------------------------------------------------
async def sweep() -> int:
    """Hint every pending task that is due and not leased, and that its own hint should have run by
    now. A missed tick only delays work; a repeated one finds nothing new."""
    now = utcnow()
    grace = timedelta(seconds=get_settings().outbox_sweep_seconds)
    docs = await OutboxTask.get_pymongo_collection().find(
        {"status": "pending", "due_at": {"$lte": now - grace},
         "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}]},
        {"_id": 1, "queue": 1},
    ).sort("due_at", 1).limit(SWEEP_BATCH).to_list()
    sent = 0
    for doc in docs:
        sent += await send_hint(doc["_id"], doc["queue"])
    if docs:
        log.info("outbox sweep: %d due task(s), %d hinted", len(docs), sent)
    return len(docs)


# -- operators --------------------------------------------------------------------------------------
async def replay(key: str) -> OutboxTask:
    """Give a dead-lettered (or waiting) task a fresh set of attempts and run it soon."""
    task = await revive(key)
    if task is None:
        existing = await OutboxTask.get(key)
        if existing is None:
            raise NotFound("task not found")
        raise TaskNotReplayable({"status": existing.status})
    return task


async def revive(key: str) -> OutboxTask | None:
    """Make a pending or dead task due now with fresh attempts (and its own age budget again) and
    hint it; None when the task is done or unknown. A run in progress keeps its lease."""
    now = utcnow()

    async def reset(session: AsyncClientSession) -> OutboxTask | None:
        coll = OutboxTask.get_pymongo_collection()
        current = await coll.find_one({"_id": key, "status": {"$in": ["pending", "dead"]}}, session=session)
        if current is None:
            return None
        changes = {"status": "pending", "attempts": 0, "due_at": now, "updated_at": now,
                   "give_up_at": now + timedelta(seconds=current.get("max_age_seconds")
                                                 or get_settings().outbox_max_age_seconds)}
        if current["status"] == "dead":
            changes["lease_until"] = None
        doc = await coll.find_one_and_update({"_id": key}, {"$set": changes}, session=session,
                                             return_document=ReturnDocument.AFTER)
        return OutboxTask.model_validate(doc)

    task = await run_in_transaction(reset)
    if task is not None:
        await send_hint(task.id, task.queue)
    return task


async def tasks(status: str | None, page: PageParams) -> tuple[list[OutboxTask], str | None]:
    return await paginate(OutboxTask, {"status": status} if status else {}, page)


async def get(key: str) -> OutboxTask:
    task = await OutboxTask.get(key)
    if task is None:
        raise NotFound("task not found")
    return task


async def counts() -> dict[str, int]:
    """Tasks waiting past their due time and dead-lettered ones: what /health reports."""
    coll = OutboxTask.get_pymongo_collection()
    overdue_cutoff = utcnow() - timedelta(seconds=3 * get_settings().outbox_sweep_seconds)
    now = utcnow()
    return {"dead": await coll.count_documents({"status": "dead"}),
            "overdue": await coll.count_documents({
                "status": "pending", "due_at": {"$lte": overdue_cutoff},
                "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}]})}
