"""Idempotency-Key for money-moving POSTs, scoped to the user and the route.

Same key + same body: the stored status and body are replayed. Same key + different body: 422.
Key still in flight: 409. Records expire after 24 h (TTL index). A 5xx or an unexpected error
releases the key, so the client can retry.
"""

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from beanie import Document
from fastapi import Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from app.config import get_settings
from app.errors import AppError, IdempotencyKeyInFlight, IdempotencyKeyMismatch
from app.kit.timeutil import utcnow


class IdempotencyRecord(Document):
    id: str  # "<user>:<method> <route>:<key>"
    request_hash: str
    status: Literal["in_flight", "done"] = "in_flight"
    response_status: int | None = None
    response_body: Any = None
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime

    class Settings:
        name = "idempotency_keys"
        indexes = [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)]


class Idempotency:
    """FastAPI dependency: `idem: Annotated[Idempotency, Depends()]`, then `await idem.run(...)`."""

    def __init__(
        self,
        request: Request,
        idempotency_key: str | None = Header(
            None, alias="Idempotency-Key", min_length=1, max_length=255, description="retry-safe request key"
        ),
    ):
        self.request = request
        self.key = idempotency_key

    async def run(
        self, user_id: Any, body: BaseModel | None, action: Callable[[], Awaitable[Any]], status_code: int = 200
    ) -> JSONResponse:
        if not self.key:
            return JSONResponse(jsonable_encoder(await action()), status_code)
        record_id = f"{user_id}:{self.request.method} {self.request.url.path}:{self.key}"
        digest = _hash(body)
        replay = await _claim(record_id, digest)
        if replay is not None:
            return replay
        try:
            result = await action()
        except AppError as exc:
            if exc.status_code >= 500:
                await IdempotencyRecord.find_one(IdempotencyRecord.id == record_id).delete()
                raise
            await _finish(record_id, exc.status_code, {"error": exc.code, "detail": jsonable_encoder(exc.detail)})
            raise
        except BaseException:
            await IdempotencyRecord.find_one(IdempotencyRecord.id == record_id).delete()
            raise
        payload = jsonable_encoder(result)
        await _finish(record_id, status_code, payload)
        return JSONResponse(payload, status_code, headers={"Idempotency-Key": self.key})


def _hash(body: BaseModel | None) -> str:
    canonical = json.dumps(body.model_dump(mode="json") if body else None, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _claim(record_id: str, digest: str) -> JSONResponse | None:
    ttl = timedelta(seconds=get_settings().idempotency_ttl_seconds)
    try:
        await IdempotencyRecord(id=record_id, request_hash=digest, expires_at=utcnow() + ttl).insert()
        return None
    except DuplicateKeyError:
        pass
    existing = await IdempotencyRecord.get(record_id)
    if existing is None:  # expired between the insert and the read: claim again
        return await _claim(record_id, digest)
    if existing.request_hash != digest:
        raise IdempotencyKeyMismatch()
    if existing.status == "in_flight":
        raise IdempotencyKeyInFlight()
    return JSONResponse(existing.response_body, existing.response_status, headers={"Idempotent-Replayed": "true"})


async def _finish(record_id: str, status_code: int, body: Any) -> None:
    await IdempotencyRecord.find_one(IdempotencyRecord.id == record_id).update(
        {"$set": {"status": "done", "response_status": status_code, "response_body": body}}
    )
