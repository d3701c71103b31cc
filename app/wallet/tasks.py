"""wallet.* tasks: the abandoned-deposit sweep and its one job per deposit. (Refunds run as outbox
tasks: app.wallet.refunds.submit.)"""

from beanie import PydanticObjectId

from app.kit import periodic
from app.kit.queue import HIGH, enqueue_async, task_context
from app.wallet import deposits

EXPIRE_TASK = "app.wallet.tasks.expire_abandoned_deposit"


@periodic.every(lambda s: max(60, min(3600, s.deposit_abandon_after_seconds // 4)))
async def sweep_abandoned_deposits() -> int:
    """wallet.sweep_abandoned_deposits: one expiry job per deposit left unpaid for too long."""
    async with task_context():
        ids = await deposits.abandoned_deposit_ids()
    for deposit_id in ids:
        await enqueue_async(HIGH, EXPIRE_TASK, deposit_id, job_id=f"deposit-expire:{deposit_id}")
    return len(ids)


async def expire_abandoned_deposit(deposit_id: str) -> str:
    """wallet.expire_abandoned_deposit: cancel it at the provider and free its quota, if still unpaid."""
    async with task_context():
        return await deposits.expire_abandoned(PydanticObjectId(deposit_id))
