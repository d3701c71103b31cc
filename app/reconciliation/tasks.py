"""reconciliation.* tasks."""

from app.kit import periodic
from app.kit.queue import LOW, task_context
from app.reconciliation import service


@periodic.cron("17 3 * * *", queue=LOW, timeout=3600)
async def reconcile() -> dict:
    """reconciliation.reconcile (daily): compare our records with the provider's; reports, never corrects."""
    async with task_context():
        report = await service.reconcile()
        return {"report_id": str(report.id), "ok": report.ok, "mismatches": report.mismatch_count,
                "skipped": sorted(report.skipped)}
