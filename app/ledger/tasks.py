"""ledger.* tasks."""

from app.ledger import reconciliation
from workers.runtime import task_context


async def reconcile() -> dict:
    """ledger.reconcile (daily): compare our records with the provider's; reports, never corrects."""
    async with task_context():
        report = await reconciliation.reconcile()
        return {"report_id": str(report.id), "ok": report.ok, "mismatches": len(report.mismatches),
                "skipped": sorted(report.skipped)}
