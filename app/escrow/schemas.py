from datetime import datetime

from app.escrow.models import Resolution
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
