"""Inbound provider webhooks: verify, store once, answer fast, process on the high queue.

Domains register handlers per event type with @handles("payment_intent.succeeded", ...). A
handler gets the stored event payload and must re-read the object's current state from the
provider, so duplicates and out-of-order deliveries converge on the same result.
"""

import importlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pymongo.errors import DuplicateKeyError

from app.integrations import payments
from app.kit.timeutil import utcnow
from app.payments.models import InboxEvent
from workers.queues import HIGH, enqueue_async

log = logging.getLogger(__name__)
Handler = Callable[[dict[str, Any]], Awaitable[None]]
_handlers: dict[str, Handler] = {}
# Modules whose import registers handlers.
HANDLER_MODULES = ("app.wallet.service", "app.payouts.service", "app.payments.service")
PROCESS_TASK = "app.payments.tasks.process_event"


def handles(*event_types: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for event_type in event_types:
            _handlers[event_type] = fn
        return fn

    return register


def handler_for(event_type: str) -> Handler | None:
    for module in HANDLER_MODULES:
        importlib.import_module(module)
    return _handlers.get(event_type)


async def receive(payload: bytes, signature: str | None) -> InboxEvent:
    """Verify and store; a duplicate delivery is a no-op that still answers 2xx."""
    event = payments.construct_event(payload, signature)
    data = event.to_dict()
    record = InboxEvent(event_id=data["id"], type=data["type"], payload=data)
    try:
        await record.insert()
    except DuplicateKeyError:
        existing = await InboxEvent.find_one(InboxEvent.source == "stripe", InboxEvent.event_id == data["id"])
        return existing or record
    await enqueue_async(HIGH, PROCESS_TASK, str(record.id), job_id=f"stripe-event:{record.event_id}")
    return record


async def process(inbox_id: str) -> str:
    from beanie import PydanticObjectId

    record = await InboxEvent.get(PydanticObjectId(inbox_id))
    if record is None or record.status == "processed":
        return "skipped"
    handler = handler_for(record.type)
    if handler is None:
        await _mark(record, "ignored")
        return "ignored"
    try:
        await handler(record.payload)
    except Exception as exc:  # recorded for operators, then re-raised so RQ retries it
        await _mark(record, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    await _mark(record, "processed")
    return "processed"


async def _mark(record: InboxEvent, status: str, error: str | None = None) -> None:
    await InboxEvent.find_one(InboxEvent.id == record.id).update(
        {"$set": {"status": status, "error": error, "processed_at": utcnow()}, "$inc": {"attempts": 1}}
    )
