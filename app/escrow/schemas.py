from datetime import datetime

from app.escrow.models import EscrowTransaction, Resolution
from app.kit.schemas import Output


class Escrow(Output):
    id: str
    builder_id: str
    tester_id: str
    amount_cents: int
    fee_cents: int
    total_cents: int
    status: str
    refs: dict[str, str]
    resolution: Resolution | None = None
    created_at: datetime
    resolved_at: datetime | None = None

    @classmethod
    def of(cls, e: EscrowTransaction) -> "Escrow":
        return cls(
            id=str(e.id), builder_id=str(e.builder_id), tester_id=str(e.tester_id), amount_cents=e.amount_cents,
            fee_cents=e.fee_cents, total_cents=e.total_cents, status=e.status, refs=e.refs,
            resolution=e.resolution, created_at=e.created_at, resolved_at=e.resolved_at,
        )
