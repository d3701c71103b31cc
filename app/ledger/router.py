from fastapi import APIRouter

from app.auth.dependencies import AdminUser
from app.ledger import service
from app.ledger.schemas import InvariantReport

router = APIRouter(prefix="/admin/ledger", tags=["admin"])


@router.get("/check", response_model=InvariantReport)
async def check_ledger(_: AdminUser) -> InvariantReport:
    """Runs the ledger invariant check: {ok, violations: [...]}."""
    return InvariantReport(**await service.check_invariants())
