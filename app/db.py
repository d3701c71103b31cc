"""The Mongo client, command counting, and the transaction helper."""

import asyncio
import contextvars
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from beanie import init_beanie
from pymongo import AsyncMongoClient, ReturnDocument, monitoring
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from app import faults
from app.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


# -- command counting (benchmarks and N+1 checks) ----------------------------------------------
db_commands: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("db_commands", default=None)


class CommandCounter(monitoring.CommandListener):
    """Appends each command name to the list in `db_commands`, when one is set."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        bucket = db_commands.get()
        if bucket is not None:
            bucket.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


# -- connection ---------------------------------------------------------------------------------
_state: dict[str, Any] = {"client": None, "loop": None}


def get_client() -> AsyncMongoClient:
    if _state["client"] is None:
        raise RuntimeError("database is not connected")
    return _state["client"]


def is_connected_here() -> bool:
    """True when a client exists and belongs to the running event loop."""
    try:
        return _state["client"] is not None and _state["loop"] is asyncio.get_running_loop()
    except RuntimeError:
        return False


async def connect(settings: Settings, *, create_indexes: bool = True) -> AsyncMongoClient:
    from app import registry

    client: AsyncMongoClient = AsyncMongoClient(
        settings.mongo_uri, tz_aware=True, event_listeners=[CommandCounter()], serverSelectionTimeoutMS=5000
    )
    await init_beanie(database=client[settings.mongo_db], document_models=registry.document_models(),
                      skip_indexes=not create_indexes)
    _state.update(client=client, loop=asyncio.get_running_loop())
    return client


async def disconnect() -> None:
    client = _state["client"]
    _state.update(client=None, loop=None)
    if client is not None:
        await client.close()


async def ping(timeout: float = 2.0) -> bool:
    try:
        await asyncio.wait_for(get_client().admin.command("ping"), timeout)
        return True
    except (PyMongoError, TimeoutError, RuntimeError):
        return False


# -- transactions -------------------------------------------------------------------------------
_after_commit: contextvars.ContextVar[list[Callable[[], Any]] | None] = contextvars.ContextVar(
    "after_commit", default=None
)


def after_commit(callback: Callable[[], Any]) -> None:
    """Run `callback` once the current transaction commits; dropped if the attempt is retried."""
    pending = _after_commit.get()
    if pending is None:
        raise RuntimeError("after_commit() called outside run_in_transaction()")
    pending.append(callback)


def _is_write_conflict(exc: PyMongoError) -> bool:
    return "Write conflict" in str(exc)  # mongoeco's unlabelled conflict: the transaction was aborted


def _body_must_rerun(exc: PyMongoError) -> bool:
    """The transaction certainly did not commit: run the whole body again in a new one."""
    if _is_write_conflict(exc):
        return True
    return exc.has_error_label("TransientTransactionError") or (
        isinstance(exc, ConnectionFailure) and not exc.has_error_label("UnknownTransactionCommitResult")
    )


def _commit_result_unknown(exc: PyMongoError) -> bool:
    """The commit may have happened: retry the commit alone, never the body (as the driver does)."""
    if _is_write_conflict(exc):
        return False
    return exc.has_error_label("UnknownTransactionCommitResult") or isinstance(exc, ConnectionFailure)


async def _end_server_session(client: AsyncMongoClient, session: AsyncClientSession) -> None:
    # Without this, mongoeco keeps a zombie transaction on the pooled session id.
    try:
        await client.admin.command("endSessions", [session.session_id])
    except PyMongoError as exc:
        log.warning("endSessions failed: %s", exc)


async def run_in_transaction(
    fn: Callable[[AsyncClientSession], Awaitable[T]], *, timeout: float | None = None
) -> T:
    """Run fn(session) in a snapshot/majority transaction.

    A conflict or a transient error before the commit reruns fn in a new transaction (with
    jittered backoff), so fn must only touch the database through `session`, defer side effects
    with after_commit(), and make its ids before it is called. A commit whose result is unknown
    is retried as a commit only, like PyMongo's with_transaction: the body never runs twice for a
    transaction that may have committed.
    """
    from app.config import get_settings

    client = get_client()
    settings = get_settings()
    budget = timeout if timeout is not None else settings.transaction_timeout_seconds
    started = time.monotonic()
    deadline = started + budget
    unreachable_deadline = started + settings.transaction_unreachable_seconds
    attempt = 0
    while True:
        attempt += 1
        callbacks: list[Callable[[], Any]] = []
        token = _after_commit.set(callbacks)
        try:
            async with client.start_session() as session:
                try:
                    result = await _attempt(session, fn, deadline, unreachable_deadline)
                except PyMongoError as exc:
                    if isinstance(exc, ConnectionFailure):  # the server is gone: give up soon, as a 503
                        if time.monotonic() >= unreachable_deadline:
                            raise
                    else:
                        await _end_server_session(client, session)
                    if not _body_must_rerun(exc) or time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(_backoff(attempt))
                    continue
        finally:
            _after_commit.reset(token)
        await _run_callbacks(callbacks)
        return result


async def _attempt(session: AsyncClientSession, fn: Callable[[AsyncClientSession], Awaitable[T]],
                   deadline: float, unreachable_deadline: float) -> T:
    await session.start_transaction(read_concern=ReadConcern("snapshot"), write_concern=WriteConcern("majority"))
    try:
        result = await fn(session)
    except BaseException:
        if session.in_transaction:
            try:
                await session.abort_transaction()
            except PyMongoError as exc:
                log.warning("abortTransaction failed: %s", exc)
        raise
    await _commit(session, deadline, unreachable_deadline)
    return result


async def _commit(session: AsyncClientSession, deadline: float, unreachable_deadline: float) -> None:
    retry = 0
    while True:
        try:
            await session.commit_transaction()  # a repeat re-sends commitTransaction for the same txn
            await faults.hit("transaction.after_commit")
            return
        except PyMongoError as exc:
            now = time.monotonic()
            if not _commit_result_unknown(exc) or now >= deadline or (
                    isinstance(exc, ConnectionFailure) and now >= unreachable_deadline):
                raise
            retry += 1
            log.warning("commit result unknown (%s); retrying the commit", exc)
            await asyncio.sleep(_backoff(retry))


def _backoff(attempt: int) -> float:
    return random.uniform(0, min(0.25, 0.002 * (2 ** min(attempt, 10))))


async def _run_callbacks(callbacks: list[Callable[[], Any]]) -> None:
    for callback in callbacks:
        try:
            outcome = callback()
            if asyncio.iscoroutine(outcome):
                await outcome
        except Exception:  # the commit stands; a failed side effect must not turn into an error
            log.exception("after-commit callback failed")


async def transition(
    model: Any,
    doc_id: Any,
    from_status: str | list[str],
    changes: dict[str, Any],
    session: AsyncClientSession,
    *,
    return_before: bool = False,
) -> Any:
    """The at-most-once state change: apply `changes` only while the document is still in
    `from_status` (one status or a list). Returns the document as it is after the change (or
    before it, with return_before), or None when it had already moved on."""
    status = {"$in": from_status} if isinstance(from_status, list) else from_status
    doc = await model.get_pymongo_collection().find_one_and_update(
        {"_id": doc_id, "status": status},
        {"$set": changes},
        session=session,
        return_document=ReturnDocument.BEFORE if return_before else ReturnDocument.AFTER,
    )
    return model.model_validate(doc) if doc is not None else None


def is_duplicate_key(exc: BaseException) -> bool:
    return isinstance(exc, OperationFailure) and exc.code == 11000


@contextmanager
def duplicate_key_as(error: type[Exception]) -> Iterator[None]:
    """Turn a unique-index violation into the domain error that names it."""
    try:
        yield
    except OperationFailure as exc:
        if is_duplicate_key(exc):
            raise error() from None
        raise
