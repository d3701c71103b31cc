"""The operator's routes over what other domains keep: the outbox of after-commit work and its dead
letters, the inbound webhook events, and reconciliation reports. Admins only."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from app.auth.dependencies import AdminUser
from app.kit.pagination import Page, PageParams
from app.ops.openapi import errors
from app.outbox import service as outbox
from app.outbox.schemas import OutboxTaskOut
from app.outbox.service import TaskNotReplayable
from app.payments import inbox
from app.payments.schemas import InboxEventOut
from app.reconciliation import service as reconciliation
from app.reconciliation.schemas import Report

router = APIRouter(prefix="/admin", tags=["admin"])
_REPLAY_ERRORS = errors(TaskNotReplayable)


@router.get("/outbox", response_model=Page[OutboxTaskOut])
async def list_tasks(_: AdminUser, page: Annotated[PageParams, Depends()],
                     status: Literal["pending", "done", "dead"] | None = Query(None)) -> Page[OutboxTaskOut]:
    """Durable after-commit work (webhook processing, transfers, refunds, emails), newest first;
    `?status=dead` lists what exhausted its retries and waits for an operator."""
    docs, nxt = await outbox.tasks(status, page)
    return Page(items=[OutboxTaskOut.of(d) for d in docs], next=nxt)


@router.get("/outbox/{task_id}", response_model=OutboxTaskOut)
async def get_task(task_id: str, _: AdminUser) -> OutboxTaskOut:
    return OutboxTaskOut.of(await outbox.get(task_id))


@router.post("/outbox/{task_id}/replay", response_model=OutboxTaskOut, status_code=202, responses=_REPLAY_ERRORS)
async def replay_task(task_id: str, _: AdminUser) -> OutboxTaskOut:
    """Give a dead-lettered (or waiting) task a fresh set of attempts and run it now. Tasks re-read
    their state first, so a replay never repeats what already happened."""
    return OutboxTaskOut.of(await outbox.replay(task_id))


@router.get("/webhook-events", response_model=Page[InboxEventOut])
async def list_webhook_events(_: AdminUser, page: Annotated[PageParams, Depends()],
                              status: Literal["received", "processed", "ignored", "failed"] | None = Query(None)
                              ) -> Page[InboxEventOut]:
    """Inbound provider events, newest first. A `failed` one is being retried; once its retries are
    exhausted its task is dead-lettered (GET /api/admin/outbox?status=dead)."""
    docs, nxt = await inbox.events(status, page)
    return Page(items=[InboxEventOut.of(d) for d in docs], next=nxt)


@router.post("/webhook-events/{event_id}/replay", response_model=OutboxTaskOut, status_code=202,
             responses=_REPLAY_ERRORS)
async def replay_webhook_event(event_id: str, _: AdminUser) -> OutboxTaskOut:
    """Process a provider event again, e.g. after fixing what made its handler fail. Handlers
    re-read the provider's state, so a replay never moves money twice."""
    return OutboxTaskOut.of(await inbox.replay(event_id))


@router.get("/reconciliation/reports", response_model=Page[Report])
async def list_reports(_: AdminUser, page: Annotated[PageParams, Depends()]) -> Page[Report]:
    """Reconciliation runs (daily, or `python -m app.cli reconcile`), newest first, each with every
    difference between our records and the provider's."""
    docs, nxt = await reconciliation.reports(page)
    return Page(items=[Report.of(d) for d in docs], next=nxt)
