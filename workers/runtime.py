"""What a worker task needs around it: its own database client (RQ runs each async job in a fresh loop)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app import db
from app.config import get_settings
from app.kit.logging import setup_logging


@asynccontextmanager
async def task_context() -> AsyncIterator[None]:
    if db.is_connected_here():  # already inside an app loop (tests run jobs inline)
        yield
        return
    settings = get_settings()
    setup_logging(settings.log_level)
    await db.connect(settings, create_indexes=False)
    try:
        yield
    finally:
        await db.disconnect()
        from app.kit.redis import close_redis

        await close_redis()
