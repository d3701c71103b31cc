"""wallet.* tasks: the stale-refund sweep and its one-job-per-refund retries."""

from app.wallet import service
from workers.queues import HIGH, enqueue_async
from workers.runtime import task_context

RETRY_TASK = "app.wallet.tasks.retry_refund"


async def retry_stale_refunds() -> int:
    """wallet.retry_stale_refunds: enqueue one retry per refund pending for over 10 minutes."""
    async with task_context():
        ids = await service.stale_refund_ids()
    for refund_id in ids:
        await enqueue_async(HIGH, RETRY_TASK, refund_id, job_id=f"wallet-refund:{refund_id}")
    return len(ids)


async def retry_refund(refund_id: str) -> str:
    """wallet.retry_refund: re-read the refund and finish it if it is still pending."""
    async with task_context():
        return await service.retry_refund(refund_id)
