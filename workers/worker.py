"""python -m workers.worker [--burst]: one RQ worker on the high, default and low queues (in that
priority). --burst drains the queues and exits."""

import logging
import sys

from rq import Worker

from app.config import get_settings
from app.kit.logging import setup_logging
from app.kit.redis import get_sync_redis
from workers.queues import QUEUE_NAMES


def main(argv: list[str] | None = None) -> None:
    burst = "--burst" in (sys.argv[1:] if argv is None else argv)
    settings = get_settings()
    setup_logging(settings.log_level)
    if settings.sentry_dsn:
        import sentry_sdk

        sentry_sdk.init(dsn=settings.sentry_dsn, environment=settings.environment)
    logging.getLogger(__name__).info("worker starting on queues %s", ",".join(QUEUE_NAMES))
    Worker(list(QUEUE_NAMES), connection=get_sync_redis()).work(with_scheduler=not burst, burst=burst)


if __name__ == "__main__":
    main()
