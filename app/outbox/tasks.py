"""outbox.* tasks: the RQ entry points around app/outbox/service.py."""

from app.kit import periodic
from app.kit.queue import task_context
from app.outbox import service


async def run(key: str) -> str:
    """outbox.run: claim and run one task (the hint sent after its commit, or by the sweep)."""
    async with task_context():
        return await service.execute(key)


@periodic.every(lambda s: s.outbox_sweep_seconds)
async def sweep() -> int:
    """outbox.sweep (periodic): re-send every due task whose hint was lost."""
    async with task_context():
        return await service.sweep()
