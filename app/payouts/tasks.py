"""payouts.* tasks."""

from beanie import PydanticObjectId

from app.payouts import service
from workers.runtime import task_context


async def transfer(payout_id: str) -> str:
    """payouts.transfer: send one reserved payout; a no-op unless it is still pending."""
    async with task_context():
        return await service.execute_transfer(PydanticObjectId(payout_id))


async def retry_stuck() -> int:
    """payouts.retry_stuck (periodic sweep): re-enqueue payouts left pending."""
    async with task_context():
        return await service.enqueue_stuck()
