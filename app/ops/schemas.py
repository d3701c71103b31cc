"""The shapes every route shares: the error envelope, and the probes' answers."""

from typing import Any, Literal

from pydantic import BaseModel, Field


class ValidationIssue(BaseModel):
    """One problem with the request, as FastAPI reports it (without the echoed input)."""

    type: str = Field(description="machine-readable kind, e.g. `missing`, `string_too_short`, `json_invalid`")
    loc: list[str | int] = Field(description="where: `body`, `query`, `header` or `path`, then the field path")
    msg: str


class ErrorBody(BaseModel):
    """Every error answer: a stable code to switch on, and details for people. `detail` is a list of
    problems only for `validation_error`; otherwise a message, or an object with the figures behind
    the refusal (for example `{"daily_limit_cents": ..., "requested_cents": ...}`)."""

    error: str = Field(description="stable machine-readable code; each response lists the codes it can carry")
    detail: str | dict[str, Any] | list[ValidationIssue]


class ServiceStatus(BaseModel):
    """A dependency probe: `ok` (200) or `down` (503)."""

    status: Literal["ok", "down"]
    service: str


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    problems: list[str] = Field(description="names of what is wrong: mongodb, redis, outbox_backlog, ...")
