"""Outermost ASGI middleware: request id, JSON access log, metrics, body size cap, security headers,
last-resort 500."""

import json
import logging
import re
import time
import uuid

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.db import db_commands
from app.ops.metrics import LATENCY, REQUESTS, method_label

log = structlog.get_logger("app.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


_DOCS_PATHS = ("/docs", "/redoc")  # Swagger UI loads its script from a CDN: no CSP there


def security_headers(settings: Settings) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    ]
    if settings.is_production_like:
        headers.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))
    return headers


_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")


class BodyTooLarge(HTTPException):
    """The body streamed past the cap (a chunked request has no Content-Length to check first). An
    HTTPException, so that FastAPI's body parsing re-raises it as a 413 instead of a parse error."""

    def __init__(self) -> None:
        super().__init__(413, "The request body is too large.")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, expose_db_commands: bool = False,
                 security_headers: list[tuple[bytes, bytes]] | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.expose_db_commands = expose_db_commands
        self.docs_headers = security_headers or []
        self.api_headers = [*self.docs_headers, _CSP]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = {"code": 500, "sent": False}
        commands: list[str] = []
        commands_token = db_commands.set(commands)
        extra_headers = self.docs_headers if scope.get("path", "").startswith(_DOCS_PATHS) else self.api_headers
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge()
            return message

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(extra_headers)
                if self.expose_db_commands:  # for scripts/bench: database commands this request ran
                    headers.append((b"x-db-commands", str(len(commands)).encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if _declared_length(scope) > self.max_body_bytes:
                await _send_error(send_with_id, 413, "payload_too_large", "The request body is too large.", request_id)
            else:
                await self.app(scope, counted_receive, send_with_id)
        except BodyTooLarge:
            if not status["sent"]:
                await _send_error(send_with_id, 413, "payload_too_large", "The request body is too large.", request_id)
        except Exception as exc:  # last resort: any bug becomes a logged 500, never a trace
            logging.getLogger("app.errors").error("unhandled error", exc_info=exc, extra={"request_id": request_id})
            if not status["sent"]:
                await _send_error(send_with_id, 500, "internal_error", {"request_id": request_id}, request_id)
        finally:
            _record(scope, status["code"], time.perf_counter() - started, len(commands))
            db_commands.reset(commands_token)
            structlog.contextvars.unbind_contextvars("request_id")


def _incoming_request_id(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"x-request-id":
            candidate = value.decode("latin-1")
            return candidate if _VALID_ID.match(candidate) else None
    return None


def _declared_length(scope: Scope) -> int:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def route_label(scope: Scope) -> str:
    """The route template (bounded label cardinality). FastAPI >= 0.16x keeps the full template of
    an included route in its effective context; scope["route"] alone lacks the router prefixes."""
    context = scope.get("fastapi", {}).get("effective_route_context")
    return getattr(context, "path_format", None) or getattr(scope.get("route"), "path", None) or "unmatched"


def _record(scope: Scope, status_code: int, duration: float, db_command_count: int) -> None:
    route = route_label(scope)
    method = method_label(scope.get("method", ""))
    REQUESTS.labels(method, route, str(status_code)).inc()
    LATENCY.labels(method, route).observe(duration)
    state = scope.get("state", {})
    log.info(
        "request",
        method=scope.get("method", "")[:16],
        path=scope.get("path"),
        route=route,
        status=status_code,
        duration_ms=round(duration * 1000, 2),
        db_commands=db_command_count,
        user_id=state.get("user_id"),
    )


async def _send_error(send: Send, status_code: int, code: str, detail, request_id: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status_code,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
