"""Render every error as {"error": code, "detail": ...} (app/ops/schemas.py ErrorBody; the OpenAPI
document lists each route's codes, see app/ops/openapi.py)."""

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from pymongo.errors import ConnectionFailure
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.errors import AppError, MalformedBody, ServiceUnavailable, ValidationFailed

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: MalformedBody.code,  # FastAPI's only 400: a body it could not parse (e.g. not UTF-8)
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _body(code: str, detail) -> dict:
    return {"error": code, "detail": jsonable_encoder(detail)}


async def app_error(_: Request, exc: AppError) -> JSONResponse:
    return JSONResponse(_body(exc.code, exc.detail), exc.status_code, exc.headers)


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's detail list, minus the echoed input (it may hold a password) and raw exception objects.
    detail = [{k: v for k, v in err.items() if k not in ("input", "ctx", "url")} for err in exc.errors()]
    return JSONResponse(_body(ValidationFailed.code, detail), ValidationFailed.status_code)


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        # The router stops at the first route whose path matches and names only its methods; a path
        # has one route per method, so list them all.
        allowed = allowed_methods(request)
        if request.method == "OPTIONS":  # not a CORS preflight (CORSMiddleware answers those)
            return Response(status_code=204, headers={"Allow": ", ".join(allowed)})
        headers["Allow"] = ", ".join(allowed)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return JSONResponse(_body(code, exc.detail), exc.status_code, headers or None)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this request's path, plus OPTIONS."""
    methods = {"OPTIONS"}
    for route in iter_route_contexts(request.app.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(route.methods or ())
    return sorted(methods)


async def dependency_down(_: Request, exc: Exception) -> JSONResponse:
    """Redis or MongoDB unreachable (or refusing writes): a retryable 503, never a 500."""
    name = "redis" if isinstance(exc, RedisError) else "mongodb"
    log.warning("%s unavailable: %s", name, exc)
    return await app_error(_, ServiceUnavailable(f"{name} is unavailable; retry shortly"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(RedisError, dependency_down)
    app.add_exception_handler(ConnectionFailure, dependency_down)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
