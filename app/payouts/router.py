from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from app.auth.dependencies import TesterUser
from app.errors import InsufficientFunds, PayoutAccountMissing, PayoutBelowMinimum
from app.kit.idempotency import Idempotency, Operation
from app.kit.pagination import Page, PageParams
from app.ops.openapi import errors
from app.payouts import service
from app.payouts.schemas import Payout, PayoutBalance, PayoutCreate

router = APIRouter(prefix="/payouts", tags=["payouts"])


@router.post("", status_code=201, response_model=Payout,
             responses=errors(PayoutAccountMissing, InsufficientFunds, PayoutBelowMinimum))
async def request_payout(body: PayoutCreate, user: TesterUser, idem: Annotated[Idempotency, Depends()]) -> JSONResponse:
    """💰 Reserves `amount_cents` of the tester's available earnings, then transfers them to the
    connected account in the background. Send an `Idempotency-Key` to retry safely."""

    async def action(op: Operation) -> Payout:
        return Payout.of(await service.request_payout(user, body.amount_cents, op.id))

    return await idem.run(user.id, body, action, status_code=201)


@router.get("", response_model=Page[Payout])
async def list_payouts(user: TesterUser, page: Annotated[PageParams, Depends()]) -> Page[Payout]:
    """The caller's payouts, newest first."""
    docs, nxt = await service.payouts(user.id, page)
    return Page(items=[Payout.of(d) for d in docs], next=nxt)


@router.get("/balance", response_model=PayoutBalance)
async def payout_balance(user: TesterUser) -> PayoutBalance:
    """Withdrawable earnings, and the amount reserved by payouts still in flight."""
    return PayoutBalance(**await service.balance(user.id))
