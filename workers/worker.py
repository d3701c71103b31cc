"""python -m workers.worker: one RQ worker on the high, default and low queues (in that priority)."""

import logging

from rq import Worker

from app.config import get_settings
from app.kit.logging import setup_logging
from app.kit.redis import get_sync_redis
from workers.queues import QUEUE_NAMES


def main() -> None:
    settings = get_settings()
    setup_logging(settings.log_level)
    if settings.sentry_dsn:
        import sentry_sdk

        sentry_sdk.init(dsn=settings.sentry_dsn, environment=settings.environment)
    logging.getLogger(__name__).info("worker starting on queues %s", ",".join(QUEUE_NAMES))
    Worker(list(QUEUE_NAMES), connection=get_sync_redis()).work(with_scheduler=True)


if __name__ == "__main__":
    main()
