"""The OpenAPI document tells the truth about errors.

Every error answer is documented with the one envelope, `ErrorBody` (`{"error": code, "detail": ...}`),
the codes that status can carry on that route (an `enum`, so a client and a fuzzer both notice a new
one), an example per code and the headers the error always sends. The codes come from the error
classes (app/errors.py and their subclasses), never from hand-written strings.

Where the codes come from:

- **Inferred** from what a route depends on, so they stay true as routes change:
  each dependency marked with `app.errors.raises(...)` (the current user: 401, 403, 429; a role: 403;
  an `Idempotency-Key`: 409, 422; a cursor: 422), a path parameter (404), query/header/body
  parameters (422 `validation_error`), a JSON body (413), and every /api route's MongoDB and Redis (503).
- **Declared** next to the code for what a service refuses: `responses=errors(InsufficientFunds, ...)`
  on the route.

`install(app)` wraps `app.openapi()`: FastAPI builds the document, then each operation's error
responses are rewritten from the route's classes, FastAPI's `HTTPValidationError` is replaced by
`ErrorBody` everywhere, and every response documents `X-Request-ID`.
"""

import http
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from app import errors as e
from app.ops.schemas import ErrorBody

REF = "#/components/schemas/"
ErrorClass = type[e.AppError]


class _Declared(dict):
    """A `responses=` entry made by errors(): a valid OpenAPI response that remembers its classes."""

    classes: tuple[ErrorClass, ...] = ()


def errors(*classes: ErrorClass) -> dict[int | str, dict[str, Any]]:
    """`responses=` for the errors a route's service raises, grouped by status. Inferred ones (auth,
    ids, validation, idempotency, 503) need not be repeated."""
    grouped: dict[int, list[ErrorClass]] = defaultdict(list)
    for cls in classes:
        grouped[cls.status_code].append(cls)
    declared: dict[int | str, dict[str, Any]] = {}
    for status, members in grouped.items():
        response = _Declared(error_response(status, members))
        response.classes = tuple(members)
        declared[status] = response
    return declared


def error_response(status: int, classes: Iterable[ErrorClass]) -> dict[str, Any]:
    """The OpenAPI response object for one status and the error classes that can answer with it."""
    by_code = {c.code: c for c in sorted(set(classes), key=lambda c: (c.code, len(c.__mro__)))}
    classes, codes = list(by_code.values()), list(by_code)  # a subclass without a code of its own adds none
    phrase = http.HTTPStatus(status).phrase
    response: dict[str, Any] = {
        "description": f"{phrase}.\n\n" + "\n".join(f"- `{c.code}`: {_summary(c)}" for c in classes),
        "content": {"application/json": {
            "schema": {"allOf": [{"$ref": REF + "ErrorBody"}], "properties": {"error": {"enum": codes}}},
            "examples": {c.code: {"$ref": f"#/components/examples/{c.code}"} for c in classes},
        }},
    }
    headers = _headers(classes)
    if headers:
        response["headers"] = headers
    return response


def _summary(cls: ErrorClass) -> str:
    doc = (cls.__doc__ or "").strip() if "__doc__" in vars(cls) else ""
    return " ".join(doc.split()) if doc else str(cls.default_detail)


def _example(cls: ErrorClass) -> dict[str, Any]:
    if cls is e.ValidationFailed:
        return {"error": cls.code, "detail": [{"type": "missing", "loc": ["body", "amount_cents"],
                                               "msg": "Field required"}]}
    return {"error": cls.code, "detail": cls.default_detail}


def _headers(classes: list[ErrorClass]) -> dict[str, Any]:
    """A header every class sends is required; one only some send is optional."""
    names = {name: text for cls in classes for name, text in cls.response_headers.items()}
    return {name: {"description": text, "required": all(name in c.response_headers for c in classes),
                   "schema": {"type": "string"}} for name, text in sorted(names.items())}


# -- inference ------------------------------------------------------------------------------------
def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _params(dependant: Dependant, kind: str) -> list[Any]:
    found = list(getattr(dependant, kind))
    for sub in dependant.dependencies:
        found += _params(sub, kind)
    return found


def inferred(route: Any) -> list[ErrorClass]:
    """The generic errors a route can answer with, read off its dependencies and parameters."""
    dependant: Dependant = route.dependant
    calls = set(_calls(dependant))
    found: list[ErrorClass] = []
    for call in calls:  # dependencies marked with app.errors.raises(...): the user, roles, keys, cursors
        found += getattr(call, "raises", ())
    if _params(dependant, "path_params"):
        found.append(e.NotFound)  # ids that do not parse are unknown ids, and so are others' resources
    if any(_params(dependant, kind) for kind in ("query_params", "header_params", "cookie_params", "body_params")):
        found.append(e.ValidationFailed)
    if _params(dependant, "body_params"):
        # JSON that does not parse is a validation error (`json_invalid`); bytes that are not text, a 400.
        found += [e.PayloadTooLarge, e.ValidationFailed, e.MalformedBody]
    if route.path_format.startswith("/api/"):
        found.append(e.ServiceUnavailable)
    return found


def route_errors(route: Any) -> dict[int, set[ErrorClass]]:
    """Inferred and declared error classes of one route, by status."""
    by_status: dict[int, set[ErrorClass]] = defaultdict(set)
    for cls in inferred(route):
        by_status[cls.status_code].add(cls)
    for response in route.responses.values():
        for cls in getattr(response, "classes", ()):
            by_status[cls.status_code].add(cls)
    return by_status


# -- the document ---------------------------------------------------------------------------------
_IDEMPOTENT_HEADERS = {
    "Idempotency-Key": {"description": "The request's Idempotency-Key, when it sent one.", "required": False,
                        "schema": {"type": "string"}},
    "Idempotent-Replayed": {"description": "`true` when this is the stored answer to an earlier request with the "
                                           "same key and body (error answers are replayed too).",
                            "required": False, "schema": {"type": "string", "enum": ["true"]}},
}
_REQUEST_ID = {"description": "The request's id: the one sent, or a new one. Quote it when reporting a problem.",
               "required": True, "schema": {"type": "string"}}


def document_errors(app: FastAPI, doc: dict[str, Any]) -> dict[str, Any]:
    """Rewrite `doc` (FastAPI's document for `app`) in place; see the module docstring."""
    seen: set[ErrorClass] = set()
    for route in iter_route_contexts(app.routes):
        if getattr(route, "dependant", None) is None or not getattr(route, "include_in_schema", False):
            continue
        operations = doc.get("paths", {}).get(route.path_format, {})
        by_status = route_errors(route)
        for method in route.methods:
            operation = operations.get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status in [s for s in responses if s.isdigit() and int(s) >= 400]:
                if int(status) not in by_status and _is_error_envelope(responses[status]):
                    del responses[status]  # FastAPI's blanket 422, on a route that cannot answer it
            for status, classes in by_status.items():
                responses[str(status)] = error_response(status, classes)
                seen.update(classes)
            if any(e.IdempotencyKeyInFlight in getattr(call, "raises", ()) for call in _calls(route.dependant)):
                for status in [s for s in responses if s.startswith("2")]:
                    responses[status].setdefault("headers", {}).update(_IDEMPOTENT_HEADERS)
            operation["responses"] = dict(sorted(responses.items()))
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schema = ErrorBody.model_json_schema(ref_template=REF + "{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas["ErrorBody"] = schema
    components["examples"] = {cls.code: {"summary": _summary(cls), "value": _example(cls)}
                              for cls in sorted(seen, key=lambda c: c.code)}
    components["headers"] = {"X-Request-ID": _REQUEST_ID}
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                response.setdefault("headers", {})["X-Request-ID"] = {"$ref": "#/components/headers/X-Request-ID"}
    return doc


def _is_error_envelope(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref") == REF + "HTTPValidationError" or "allOf" in schema


def install(app: FastAPI) -> None:
    """Make `app.openapi()` (and so /openapi.json and /docs, where enabled) document the errors."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(app, build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
