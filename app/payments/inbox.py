"""Inbound provider webhooks: verify, store once, answer fast, process durably.

Domains register handlers per event type where they are defined:

    @inbox.handles("payment_intent.succeeded", ...)
    async def on_payment_intent(event: dict) -> None: ...

A handler gets the stored event payload and must re-read the object's current state from the
provider (or otherwise act on cumulative state), so duplicate and out-of-order deliveries converge.

The stored event is the durable truth. Its processing is an outbox task written in the same
transaction, so a lost queue message, a dead worker or a failing handler only delays it: the task
is retried with backoff and dead-lettered for operators after its last try. A redelivery of an
event that is not processed yet makes it due again (a dead-lettered one gets fresh attempts).
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from beanie import PydanticObjectId
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from app.db import run_in_transaction
from app.integrations import payments
from app.kit.pagination import PageParams, paginate
from app.kit.queue import HIGH
from app.kit.timeutil import utcnow
from app.outbox import service as outbox
from app.payments.models import InboxEvent

log = logging.getLogger(__name__)
Handler = Callable[[dict[str, Any]], Awaitable[None]]
_handlers: dict[str, Handler] = {}
PROCESS_TASK = "app.payments.inbox.process"


def handles(*event_types: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for event_type in event_types:
            _handlers[event_type] = fn
        return fn

    return register


def handler_for(event_type: str) -> Handler | None:
    return _handlers.get(event_type)


def task_key(source: str, event_id: str) -> str:
    return f"inbox:{source}:{event_id}"


async def receive(payload: bytes, signature: str | None) -> InboxEvent:
    """Verify and store the event with its processing task; a redelivery only makes that task due
    again. Either way the provider gets its 2xx once the event is durably stored."""
    event = payments.construct_event(payload, signature)
    data = event.to_dict()
    record = InboxEvent(id=PydanticObjectId(), event_id=data["id"], type=data["type"], payload=data)

    async def store(session: AsyncClientSession) -> None:
        await record.insert(session=session)
        await outbox.add(session, PROCESS_TASK, str(record.id), key=task_key(record.source, record.event_id),
                         queue=HIGH, label=f"{record.source} {record.type} {record.event_id}")

    try:
        await run_in_transaction(store)
    except DuplicateKeyError:
        existing = await InboxEvent.find_one(InboxEvent.source == record.source, InboxEvent.event_id == record.event_id)
        if existing is not None and existing.status not in ("processed", "ignored"):
            log.info("redelivery of unprocessed event %s: making it due again", record.event_id)
            await outbox.revive(task_key(existing.source, existing.event_id))
        return existing or record
    return record


async def process(inbox_id: str) -> str:
    """The outbox task: apply one stored event. A handler error is recorded and re-raised, so the
    outbox retries it."""
    record = await InboxEvent.get(PydanticObjectId(inbox_id))
    if record is None or record.status in ("processed", "ignored"):
        return "skipped"
    handler = handler_for(record.type)
    if handler is None:
        await _mark(record.id, "ignored")
        return "ignored"
    try:
        await handler(record.payload)
    except Exception as exc:  # recorded for operators, then re-raised so the outbox retries it
        await _mark(record.id, "failed", error=f"{type(exc).__name__}: {exc}"[:1000])
        raise
    await _mark(record.id, "processed")
    return "processed"


async def _mark(inbox_id: PydanticObjectId, status: str, error: str | None = None) -> None:
    async def update(session: AsyncClientSession) -> None:
        await InboxEvent.get_pymongo_collection().update_one(
            {"_id": inbox_id},
            {"$set": {"status": status, "error": error, "processed_at": utcnow()}, "$inc": {"attempts": 1}},
            session=session)

    await run_in_transaction(update)


# -- operators ----------------------------------------------------------------------------------------
async def events(status: str | None, page: PageParams) -> tuple[list[InboxEvent], str | None]:
    return await paginate(InboxEvent, {"status": status} if status else {}, page)


async def replay(event_id: str, source: str = "stripe") -> Any:
    """Run an event's processing again (a dead-lettered one with fresh attempts)."""
    return await outbox.replay(task_key(source, event_id))
