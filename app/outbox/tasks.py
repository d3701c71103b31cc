"""outbox.* tasks: the RQ entry points around app/outbox/service.py."""

import asyncio

from redis.exceptions import RedisError

from app.config import get_settings
from app.kit import periodic
from app.kit.queue import task_context
from app.kit.redis import get_sync_redis
from app.outbox import service


async def run(key: str) -> str:
    """outbox.run: claim and run one task (the hint sent after its commit, or by the sweep)."""
    async with task_context():
        return await service.execute(key)


@periodic.every(lambda s: s.outbox_sweep_seconds)
async def sweep() -> int:
    """outbox.sweep (periodic): re-send every due task whose hint was lost. Ticks that queued up
    while no worker ran collapse into one."""
    if not await _first_in_window("outbox:sweep", get_settings().outbox_sweep_seconds / 2):
        return 0
    async with task_context():
        return await service.sweep()


async def _first_in_window(name: str, seconds: float) -> bool:
    def claim() -> bool:
        return bool(get_sync_redis().set(f"once:{name}", "1", nx=True, px=max(1, int(seconds * 1000))))

    try:
        return await asyncio.to_thread(claim)
    except (RedisError, OSError):
        return True  # without Redis, sweeping again is the safe side
