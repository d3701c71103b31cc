from typing import Annotated

from fastapi import APIRouter, Depends

from app.auth.dependencies import BuilderUser
from app.errors import BalanceOwed, DailyLimitExceeded, InsufficientFunds, PaymentProviderError
from app.kit.idempotency import Idempotency, Operation
from app.kit.ids import parse_object_id
from app.kit.pagination import Page, PageParams
from app.ledger.schemas import Entry
from app.ops.openapi import errors
from app.wallet import deposits, refunds, service
from app.wallet.schemas import (
    DepositCreate,
    DepositCreated,
    DepositOut,
    RefundCreate,
    RefundLot,
    RefundOut,
    RefundRequestOut,
    Wallet,
)

router = APIRouter(prefix="/wallet", tags=["wallet"])

@router.get("", response_model=Wallet)
async def get_wallet(user: BuilderUser) -> Wallet:
    """Balances in cents: spendable, held in escrow, refunds in flight, owed after a chargeback, and
    today's deposit quota."""
    return Wallet(**await service.wallet_summary(user.id))


@router.post("/deposits", status_code=201, response_model=DepositCreated,
             responses=errors(DailyLimitExceeded, PaymentProviderError))
async def create_deposit(body: DepositCreate, user: BuilderUser, idem: Annotated[Idempotency, Depends()]):
    """Opens a pending deposit and its PaymentIntent: confirm `client_secret` with Stripe.js. The
    wallet is credited only when the provider's webhook confirms the payment."""

    async def create(op: Operation) -> DepositCreated:
        return DepositCreated.of(await deposits.create_deposit(user, body.amount_cents, op.id))

    return await idem.run(user.id, body, create, status_code=201)


@router.get("/deposits", response_model=Page[DepositOut])
async def list_deposits(user: BuilderUser, page: Annotated[PageParams, Depends()]) -> Page[DepositOut]:
    """The caller's deposits, newest first."""
    docs, nxt = await service.deposits(user.id, page)
    return Page(items=[DepositOut.of(d) for d in docs], next=nxt)


@router.get("/deposits/{deposit_id}", response_model=DepositOut)
async def get_deposit(deposit_id: str, user: BuilderUser) -> DepositOut:
    """One of the caller's deposits (poll it after paying); others' deposits are 404."""
    return DepositOut.of(await service.get_deposit(user.id, parse_object_id(deposit_id, "deposit")))


@router.post("/refunds", status_code=201, response_model=RefundRequestOut,
             responses=errors(BalanceOwed, InsufficientFunds))
async def create_refund(body: RefundCreate, user: BuilderUser, idem: Annotated[Idempotency, Depends()]):
    """Refunds unspent deposits to their original payments, oldest first, inside the refund window.
    201 with one item per deposit touched; each item's status is `succeeded`, `failed` (the cents
    went back to the wallet, see failure_reason) or `pending` (the provider has not answered yet)."""

    async def refund(op: Operation) -> RefundRequestOut:
        lots = await refunds.request_refund(user.id, body.amount_cents, str(op.id))
        return RefundRequestOut(request_id=str(op.id), amount_cents=body.amount_cents,
                                refunds=[RefundLot.of(r) for r in lots])

    return await idem.run(user.id, body, refund, status_code=201)


@router.get("/refunds", response_model=Page[RefundOut])
async def list_refunds(user: BuilderUser, page: Annotated[PageParams, Depends()]) -> Page[RefundOut]:
    """The caller's refunds (one item per deposit touched), newest first."""
    docs, nxt = await service.refunds(user.id, page)
    return Page(items=[RefundOut.of(r) for r in docs], next=nxt)


@router.get("/entries", response_model=Page[Entry])
async def list_entries(user: BuilderUser, page: Annotated[PageParams, Depends()]) -> Page[Entry]:
    """The caller's journal entries across available, held and refund_pending, newest first."""
    items, nxt = await service.entries(user.id, page)
    return Page(items=items, next=nxt)
