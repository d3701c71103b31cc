from typing import Annotated

from fastapi import APIRouter, Depends

from app.auth.dependencies import AdminUser
from app.kit.pagination import Page, PageParams
from app.reconciliation import service
from app.reconciliation.schemas import Report

router = APIRouter(prefix="/admin/reconciliation", tags=["admin"])


@router.get("/reports", response_model=Page[Report])
async def list_reports(_: AdminUser, page: Annotated[PageParams, Depends()]) -> Page[Report]:
    """Reconciliation runs (daily, or `python -m app.cli reconcile`), newest first, each with every
    difference between our records and the provider's."""
    docs, nxt = await service.reports(page)
    return Page(items=[Report.of(d) for d in docs], next=nxt)
