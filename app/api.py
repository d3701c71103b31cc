"""Mounts every domain router under /api."""

from fastapi import APIRouter

from app.auth.router import router as auth_router
from app.escrow.router import router as escrow_router
from app.ledger.router import router as ledger_router
from app.payments.router import router as payments_router
from app.payouts.router import router as payouts_router
from app.users.router import router as users_router
from app.wallet.router import router as wallet_router

api_router = APIRouter(prefix="/api")
for domain_router in (
    auth_router, users_router, escrow_router, ledger_router, payments_router, payouts_router, wallet_router,
):
    api_router.include_router(domain_router)
