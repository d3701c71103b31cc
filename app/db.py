"""The Mongo client, the document model list, and the transaction helper."""

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

from app.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

DOCUMENT_MODELS: list[str] = [
    "app.users.models.User",
    "app.auth.models.RefreshToken",
    "app.auth.models.OneTimeToken",
    "app.ledger.models.Journal",
    "app.ledger.models.AccountBalance",
    "app.ledger.models.ReconciliationReport",
    "app.escrow.models.EscrowTransaction",
    "app.kit.idempotency.IdempotencyRecord",
    "app.payments.models.InboxEvent",
    "app.payouts.models.Payout",
    "app.wallet.models.Deposit",
    "app.wallet.models.DepositQuota",
    "app.wallet.models.WalletAllocation",
    "app.wallet.models.WalletRefund",
]


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
    client: AsyncMongoClient = AsyncMongoClient(
        settings.mongo_uri, tz_aware=True, event_listeners=[CommandCounter()], serverSelectionTimeoutMS=5000
    )
    await init_beanie(database=client[settings.mongo_db], document_models=DOCUMENT_MODELS, skip_indexes=not create_indexes)
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


def _is_retryable(exc: PyMongoError) -> bool:
    if "Write conflict" in str(exc):  # mongoeco's unlabelled conflict
        return True
    if isinstance(exc, ConnectionFailure):
        return True
    return exc.has_error_label("TransientTransactionError") or exc.has_error_label("UnknownTransactionCommitResult")


async def _end_server_session(client: AsyncMongoClient, session: AsyncClientSession) -> None:
    # Without this, mongoeco keeps a zombie transaction on the pooled session id.
    try:
        await client.admin.command("endSessions", [session.session_id])
    except PyMongoError as exc:
        log.warning("endSessions failed: %s", exc)


async def run_in_transaction(
    fn: Callable[[AsyncClientSession], Awaitable[T]], *, timeout: float | None = None
) -> T:
    """Run fn(session) in a snapshot/majority transaction, retrying conflicts with jittered backoff.

    fn may run more than once, so it must only touch the database through `session` and defer
    side effects with after_commit().
    """
    from app.config import get_settings

    client = get_client()
    budget = timeout if timeout is not None else get_settings().transaction_timeout_seconds
    deadline = time.monotonic() + budget
    attempt = 0
    while True:
        attempt += 1
        callbacks: list[Callable[[], Any]] = []
        token = _after_commit.set(callbacks)
        try:
            async with client.start_session() as session:
                try:
                    async with await session.start_transaction(
                        read_concern=ReadConcern("snapshot"), write_concern=WriteConcern("majority")
                    ):
                        result = await fn(session)
                except PyMongoError as exc:
                    await _end_server_session(client, session)
                    if not _is_retryable(exc) or time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(_backoff(attempt))
                    continue
        finally:
            _after_commit.reset(token)
        await _run_callbacks(callbacks)
        return result


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
