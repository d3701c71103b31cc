"""Idempotency-Key for money-moving POSTs, scoped to the user and the route, with recovery points.

Same key + same body: the stored status and body are replayed (`Idempotent-Replayed: true`).
Same key + different body: 422. Key still running: 409 with Retry-After.

A request's ids come from its key: the record holds an `operation_id` made once, before any
transaction, and the route hands it to the service, which builds its own ids and journal keys from
it. So a retry of a request that died halfway (a 5xx, a crash, a commit whose result was unknown)
finds what the first attempt committed and goes on from there; it never starts over. The key is
never released: after a 5xx its lease is let go so a retry resumes at once, and a key left running
by a crashed process is taken over when its lease (IDEMPOTENCY_LEASE_SECONDS) runs out. Services
mark each money commit with checkpoint(session, "<point>") inside that transaction, so the record
says how far the request got (Stripe's recovery points). Records expire after 24 h (TTL index).
"""

import contextvars
import hashlib
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from beanie import Document, PydanticObjectId
from fastapi import Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError

from app.config import get_settings
from app.db import run_in_transaction
from app.errors import AppError, IdempotencyKeyInFlight, IdempotencyKeyMismatch, raises
from app.kit.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)


class IdempotencyRecord(Document):
    id: str  # "<user>:<method> <route>:<key>"
    request_hash: str
    operation_id: PydanticObjectId  # the request's own id, the same on every retry
    status: Literal["in_flight", "done"] = "in_flight"
    recovery_point: str = "started"  # the last money commit the request made
    attempts: int = 1
    locked_until: datetime | None = None  # the lease of the attempt running now
    lease_token: str | None = None  # which attempt holds it: a stale one can neither finish nor release
    response_status: int | None = None
    response_body: Any = None
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime

    class Settings:
        name = "idempotency_keys"
        indexes = [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)]


@dataclass(frozen=True)
class Operation:
    """One money request: its id (stable across retries of one key) and how far an earlier attempt got."""

    id: PydanticObjectId
    record_id: str | None = None  # None when the client sent no key
    resumed: bool = False
    recovery_point: str = "started"
    lease_token: str | None = None


_current: contextvars.ContextVar[Operation | None] = contextvars.ContextVar("idempotent_operation", default=None)


async def checkpoint(session: AsyncClientSession, point: str) -> None:
    """Record a recovery point in the current request's key, inside the money transaction."""
    op = _current.get()
    if op is not None and op.record_id is not None:
        await IdempotencyRecord.get_pymongo_collection().update_one(
            {"_id": op.record_id}, {"$set": {"recovery_point": point}}, session=session)


@raises(IdempotencyKeyInFlight, IdempotencyKeyMismatch)
class Idempotency:
    """FastAPI dependency: `idem: Annotated[Idempotency, Depends()]`, then
    `await idem.run(user.id, body, lambda op: service.do(..., op.id))`."""

    def __init__(
        self,
        request: Request,
        idempotency_key: str | None = Header(
            None, alias="Idempotency-Key", min_length=1, max_length=255, description="retry-safe request key"
        ),
    ):
        self.request = request
        self.key = idempotency_key

    async def run(self, user_id: Any, body: BaseModel | None, action: Callable[[Operation], Awaitable[Any]],
                  status_code: int = 200) -> JSONResponse:
        if not self.key:
            return JSONResponse(jsonable_encoder(await _within(Operation(PydanticObjectId()), action)), status_code)
        record_id = f"{user_id}:{self.request.method} {self.request.url.path}:{self.key}"
        claimed = await _claim(record_id, _hash(body))
        if isinstance(claimed, JSONResponse):
            return claimed
        try:
            result = await _within(claimed, action)
        except AppError as exc:
            if exc.status_code >= 500:
                await _let_go(claimed)
            else:
                await _finish(claimed, exc.status_code, {"error": exc.code, "detail": jsonable_encoder(exc.detail)})
            raise
        except BaseException as exc:
            if not isinstance(exc, ConnectionFailure):  # without MongoDB the lease simply runs out
                await _let_go(claimed)
            raise
        payload = jsonable_encoder(result)
        await _finish(claimed, status_code, payload)
        return JSONResponse(payload, status_code, headers={"Idempotency-Key": self.key})


async def _within(op: Operation, action: Callable[[Operation], Awaitable[Any]]) -> Any:
    token = _current.set(op)
    try:
        return await action(op)
    finally:
        _current.reset(token)


def _hash(body: BaseModel | None) -> str:
    canonical = json.dumps(body.model_dump(mode="json") if body else None, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _claim(record_id: str, digest: str) -> Operation | JSONResponse:
    """A new key starts an operation; a finished one replays; a running one is 409 until its lease
    runs out, and is then taken over and resumed."""
    settings = get_settings()

    async def claim(session: AsyncClientSession) -> Operation | JSONResponse:
        now = utcnow()
        lease_end = now + timedelta(seconds=settings.idempotency_lease_seconds)
        coll = IdempotencyRecord.get_pymongo_collection()
        doc = await coll.find_one({"_id": record_id}, session=session)
        lease = uuid.uuid4().hex
        if doc is None:
            record = IdempotencyRecord(id=record_id, request_hash=digest, operation_id=PydanticObjectId(),
                                       locked_until=lease_end, lease_token=lease,
                                       expires_at=now + timedelta(seconds=settings.idempotency_ttl_seconds))
            await record.insert(session=session)
            return Operation(record.operation_id, record_id, lease_token=lease)
        existing = IdempotencyRecord.model_validate(doc)
        if existing.request_hash != digest:
            raise IdempotencyKeyMismatch()
        if existing.status == "done":
            return JSONResponse(existing.response_body, existing.response_status,
                                headers={"Idempotent-Replayed": "true"})
        if existing.locked_until is not None and as_utc(existing.locked_until) > now:
            wait = math.ceil((as_utc(existing.locked_until) - now).total_seconds())
            raise IdempotencyKeyInFlight(headers={"Retry-After": str(max(1, wait))})
        await coll.update_one({"_id": record_id},
                              {"$set": {"locked_until": lease_end, "lease_token": lease}, "$inc": {"attempts": 1}},
                              session=session)
        log.info("idempotency key %s resumed after %s", record_id, existing.recovery_point)
        return Operation(existing.operation_id, record_id, resumed=True, recovery_point=existing.recovery_point,
                         lease_token=lease)

    try:
        return await run_in_transaction(claim)
    except DuplicateKeyError:  # a concurrent first attempt inserted it: now it is in flight
        return await run_in_transaction(claim)


async def _finish(op: Operation, status_code: int, body: Any) -> None:
    await _set(op, {"status": "done", "response_status": status_code, "response_body": body, "locked_until": None})


async def _let_go(op: Operation) -> None:
    """Keep the key and its operation id, but end the lease so a retry resumes at once."""
    try:
        await _set(op, {"locked_until": None})
    except PyMongoError as exc:  # the lease then simply runs out
        log.warning("could not release idempotency key %s: %s", op.record_id, exc)


async def _set(op: Operation, changes: dict[str, Any]) -> None:
    """Only while this attempt holds the lease: one that outlived it must not overwrite the next."""

    async def update(session: AsyncClientSession) -> None:
        await IdempotencyRecord.get_pymongo_collection().update_one(
            {"_id": op.record_id, "lease_token": op.lease_token}, {"$set": changes}, session=session)

    await run_in_transaction(update)
