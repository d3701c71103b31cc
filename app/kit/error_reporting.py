"""Sentry, when SENTRY_DSN is set, with nothing secret in the events: no request bodies (passwords,
tokens), no cookies or Authorization headers, no job arguments, and no local variables of stack
frames (a handler's frame holds the parsed body, password included)."""

from typing import Any

from app.config import Settings

_SECRET_HEADERS = {"authorization", "cookie", "idempotency-key", "stripe-signature", "x-metrics-token"}


def scrub(event: dict[str, Any], _hint: Any = None) -> dict[str, Any]:
    request = event.get("request")
    if isinstance(request, dict):
        for key in ("data", "cookies", "query_string"):
            request.pop(key, None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {k: v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS}
    for part in ("exception", "threads"):  # both carry stack traces
        for entry in (event.get(part) or {}).get("values") or []:
            for frame in (entry.get("stacktrace") or {}).get("frames") or []:
                frame.pop("vars", None)
    extra = event.get("extra")
    if isinstance(extra, dict):
        job = extra.get("rq-job")
        if isinstance(job, dict):
            for key in ("args", "kwargs", "description"):
                job.pop(key, None)
    return event


def init(settings: Settings) -> None:
    if not settings.sentry_dsn:
        return
    import sentry_sdk

    sentry_sdk.init(dsn=settings.sentry_dsn, environment=settings.environment,
                    max_request_body_size="never", include_local_variables=False, before_send=scrub)
