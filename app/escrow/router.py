from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from app.auth.dependencies import CurrentUser
from app.escrow import service
from app.escrow.schemas import Escrow
from app.kit.pagination import Page, PageParams

router = APIRouter(prefix="/escrow", tags=["escrow"])


@router.get("/transactions", response_model=Page[Escrow])
async def list_holds(
    user: CurrentUser,
    page: Annotated[PageParams, Depends()],
    status: Literal["held", "released", "refunded", "voided", "split"] | None = Query(None),
) -> Page[Escrow]:
    """Builders see holds on their wallet, testers holds in their favour, admins all."""
    docs, nxt = await service.visible_holds(user, status, page)
    return Page(items=[Escrow.of(d) for d in docs], next=nxt)
