"""Render every error as {"error": code, "detail": ...}."""

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import AppError

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


def install(app: FastAPI) -> None:
    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
