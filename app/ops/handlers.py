"""Render every error as {"error": code, "detail": ...}."""

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo.errors import ConnectionFailure
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import AppError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


async def app_error(_: Request, exc: AppError) -> JSONResponse:
    return JSONResponse({"error": exc.code, "detail": jsonable_encoder(exc.detail)}, exc.status_code, exc.headers)


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's detail list, minus the echoed input (it may hold a password) and raw exception objects.
    detail = [{k: v for k, v in err.items() if k not in ("input", "ctx", "url")} for err in exc.errors()]
    return JSONResponse({"error": "validation_error", "detail": jsonable_encoder(detail)}, 422)


async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return JSONResponse({"error": code, "detail": exc.detail}, exc.status_code, getattr(exc, "headers", None))


async def dependency_down(_: Request, exc: Exception) -> JSONResponse:
    """Redis or MongoDB unreachable (or refusing writes): a retryable 503, never a 500."""
    name = "redis" if isinstance(exc, RedisError) else "mongodb"
    log.warning("%s unavailable: %s", name, exc)
    return JSONResponse({"error": "service_unavailable", "detail": f"{name} is unavailable; retry shortly"}, 503,
                        {"Retry-After": "2"})


def install(app: FastAPI) -> None:
    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(RedisError, dependency_down)
    app.add_exception_handler(ConnectionFailure, dependency_down)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
