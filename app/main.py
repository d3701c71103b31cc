"""create_app(): the FastAPI application with its lifespan, middleware and routers."""

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import db, registry
from app.api import api_router
from app.config import Settings, get_settings
from app.kit import crypto, error_reporting
from app.kit.logging import setup_logging
from app.kit.redis import close_redis
from app.ops import handlers, health, openapi
from app.ops.middleware import RequestContextMiddleware, security_headers
from app.ops.router import router as ops_router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    setup_logging(settings.log_level)
    registry.load()
    crypto.check_keys()
    error_reporting.init(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await db.connect(settings)
        await health.probe()
        monitor = asyncio.create_task(health.run_forever())
        try:
            yield
        finally:
            monitor.cancel()
            await db.disconnect()
            await close_redis()

    app = FastAPI(
        title="PeerTest Hub API",
        version="0.1.0",
        description="Peer-testing marketplace: jobs, escrow, submissions, disputes. Errors are "
        '`{"error": code, "detail": ...}`; money is integer cents.',
        lifespan=lifespan,
        # The interactive docs and the schema are for development; production serves neither.
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    handlers.install(app)
    openapi.install(app)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
        expose_headers=["X-Request-ID", "Retry-After"],
    )
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        expose_db_commands=settings.expose_db_commands,
        security_headers=security_headers(settings),
    )
    app.include_router(ops_router)
    app.include_router(api_router)
    return app


app = create_app()
