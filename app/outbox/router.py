from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from app.auth.dependencies import AdminUser
from app.kit.pagination import Page, PageParams
from app.outbox import service
from app.outbox.schemas import OutboxTaskOut

router = APIRouter(prefix="/admin/outbox", tags=["admin"])


@router.get("", response_model=Page[OutboxTaskOut])
async def list_tasks(_: AdminUser, page: Annotated[PageParams, Depends()],
                     status: Literal["pending", "done", "dead"] | None = Query(None)) -> Page[OutboxTaskOut]:
    """Durable after-commit work (webhook processing, transfers, refunds, emails), newest first;
    `?status=dead` lists what exhausted its retries and waits for an operator."""
    docs, nxt = await service.tasks(status, page)
    return Page(items=[OutboxTaskOut.of(d) for d in docs], next=nxt)


@router.get("/{task_id}", response_model=OutboxTaskOut)
async def get_task(task_id: str, _: AdminUser) -> OutboxTaskOut:
    return OutboxTaskOut.of(await service.get(task_id))


@router.post("/{task_id}/replay", response_model=OutboxTaskOut, status_code=202,
             responses={404: {"description": "not_found"}, 409: {"description": "task_not_replayable"}})
async def replay_task(task_id: str, _: AdminUser) -> OutboxTaskOut:
    """Give a dead-lettered (or waiting) task a fresh set of attempts and run it now. Tasks re-read
    their state first, so a replay never repeats what already happened."""
    return OutboxTaskOut.of(await service.replay(task_id))
