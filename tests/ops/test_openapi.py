"""The OpenAPI document tells the truth: one error envelope, each route's real error codes, business
bounds, the committed copy is current, Allow lists every method, and production serves no docs."""

import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx
import jsonschema
import pytest

from app import errors
from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "openapi.json"
REGENERATE = ".venv/bin/python scripts/openapi.py > docs/openapi.json"


@pytest.fixture
def doc(app):
    return app.openapi()


def _operations(doc):
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            yield f"{method.upper()} {path}", operation


def _codes(operation, status: int) -> list[str]:
    schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
    return schema["properties"]["error"]["enum"]


def _all_codes() -> set[str]:
    found, todo = set(), [errors.AppError]
    while todo:
        cls = todo.pop()
        found.add(cls.code)
        todo += cls.__subclasses__()
    return found


def test_committed_document_is_current():
    printed = subprocess.run([sys.executable, "scripts/openapi.py"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert printed.returncode == 0, printed.stderr[-2000:]
    committed = COMMITTED.read_text() if COMMITTED.exists() else ""
    assert printed.stdout == committed, (
        f"docs/openapi.json is stale: the app's document changed. Regenerate it with `{REGENERATE}` "
        "and commit it.")


def test_every_error_answer_uses_the_one_envelope(doc):
    assert "HTTPValidationError" not in json.dumps(doc) and "ValidationError" not in doc["components"]["schemas"]
    known = _all_codes()
    for label, operation in _operations(doc):
        for status, response in operation["responses"].items():
            assert "X-Request-ID" in response["headers"], (label, status)
            if int(status) < 400 or label in ("GET /health/db", "GET /health/redis"):
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema["allOf"] == [{"$ref": "#/components/schemas/ErrorBody"}], (label, status)
            codes = schema["properties"]["error"]["enum"]
            assert set(codes) <= known, (label, status, set(codes) - known)
            assert set(response["content"]["application/json"]["examples"]) == set(codes), (label, status)
            for code in codes:
                assert code in doc["components"]["examples"], code
    body = doc["components"]["schemas"]["ErrorBody"]
    assert body["required"] == ["error", "detail"]


def test_codes_are_inferred_from_the_dependencies(doc):
    ops = dict(_operations(doc))
    deposit = ops["POST /api/wallet/deposits"]
    assert set(deposit["responses"]) == {"201", "400", "401", "403", "409", "413", "422", "429", "502", "503"}
    assert _codes(deposit, 401) == ["invalid_token"]
    assert _codes(deposit, 403) == ["account_disabled", "wrong_role"]
    assert _codes(deposit, 409) == ["daily_limit_exceeded", "idempotency_key_in_flight"]
    assert _codes(deposit, 422) == ["idempotency_key_reused", "validation_error"]
    assert deposit["responses"]["429"]["headers"]["Retry-After"]["required"] is True
    assert deposit["responses"]["409"]["headers"]["Retry-After"]["required"] is False  # in flight only
    assert deposit["responses"]["401"]["headers"]["WWW-Authenticate"]["required"] is True

    profile = ops["GET /api/users/{user_id}"]
    assert "404" in profile["responses"] and "422" not in profile["responses"]  # a str id cannot fail validation
    assert _codes(profile, 403) == ["account_disabled"]  # any role

    listing = ops["GET /api/wallet/entries"]
    assert _codes(listing, 422) == ["invalid_cursor", "validation_error"]  # a bad cursor, or a bad limit
    assert "413" not in listing["responses"]  # no body

    login = ops["POST /api/auth/login"]
    assert _codes(login, 401) == ["invalid_credentials"]
    assert _codes(login, 403) == ["account_disabled", "email_not_verified"]
    assert _codes(login, 429) == ["login_throttled", "rate_limited"]
    assert _codes(ops["POST /api/webhooks/stripe"], 400) == ["invalid_signature"]
    assert set(ops["GET /health"]["responses"]) == {"200"}
    assert set(ops["GET /health/db"]["responses"]) == {"200", "503"}


def test_business_bounds_are_in_the_schema(doc, settings):
    schemas = doc["components"]["schemas"]
    deposit = schemas["DepositCreate"]["properties"]["amount_cents"]
    assert (deposit["minimum"], deposit["maximum"]) == (settings.min_deposit_cents, settings.max_deposit_cents)
    assert (deposit["minimum"], deposit["maximum"]) == (500, 100_000)
    refund = schemas["RefundCreate"]["properties"]["amount_cents"]
    assert refund["maximum"] == settings.daily_deposit_limit_cents * settings.refund_window_days
    assert schemas["PayoutCreate"]["properties"]["amount_cents"]["minimum"] == settings.min_payout_cents
    passwords = (("RegisterIn", "password"), ("PasswordResetConfirmIn", "new_password"))
    for name, field in passwords:
        password = schemas[name]["properties"][field]
        assert (password["minLength"], password["maxLength"]) == (settings.password_min_length, 128)
    login = schemas["LoginIn"]["properties"]["password"]  # a stored password, whatever today's rules
    assert (login["minLength"], login["maxLength"]) == (1, 128)
    for label, operation in _operations(doc):
        for param in operation.get("parameters", []):
            if param["name"] == "limit":
                assert (param["schema"]["minimum"], param["schema"]["maximum"]) == (1, 100), label


async def test_answers_match_the_documented_envelope(client, actors, doc):
    """A few real refusals of each shape, validated against the document's own schemas."""
    builder = await actors.signed_in("builder")
    h = builder["headers"]
    answers = [
        ("POST /api/wallet/deposits", await client.post("/api/wallet/deposits", json={"amount_cents": 1}, headers=h)),
        ("GET /api/wallet/entries", await client.get("/api/wallet/entries?cursor=nonsense", headers=h)),
        ("PATCH /api/users/me", await client.patch("/api/users/me", json={"skills": ["qa"]}, headers=h)),
        ("POST /api/wallet/deposits", await client.post("/api/wallet/deposits", content=b"\x80\x81",
                                                        headers={**h, "Content-Type": "application/json"})),
        ("GET /api/wallet", await client.get("/api/wallet")),
    ]
    resolver = {"components": doc["components"]}
    for label, resp in answers:
        method, path = label.split(" ", 1)
        documented = doc["paths"][path][method.lower()]["responses"]
        assert str(resp.status_code) in documented, (label, resp.status_code, resp.text)
        schema = {**documented[str(resp.status_code)]["content"]["application/json"]["schema"], **resolver}
        jsonschema.validate(resp.json(), schema)
    assert [r.status_code for _, r in answers] == [422, 422, 422, 400, 401]
    assert answers[0][1].json()["error"] == "validation_error" and isinstance(answers[0][1].json()["detail"], list)
    assert answers[1][1].json()["error"] == "invalid_cursor" and isinstance(answers[1][1].json()["detail"], str)
    assert answers[2][1].json()["error"] == "field_not_for_role" and isinstance(answers[2][1].json()["detail"], str)
    assert answers[3][1].json()["error"] == "malformed_body"


async def test_options_and_405_list_every_method_of_the_path(client):
    options = await client.options("/api/users/me")
    assert options.status_code == 204 and options.headers["allow"] == "GET, OPTIONS, PATCH"
    wrong = await client.put("/api/wallet/deposits")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, OPTIONS, POST"
    assert wrong.json() == {"error": "method_not_allowed", "detail": "Method Not Allowed"}
    preflight = await client.options("/api/users/me", headers={"Origin": "http://localhost:5173",
                                                               "Access-Control-Request-Method": "PATCH"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "PATCH" in preflight.headers["access-control-allow-methods"]


@pytest.mark.parametrize("environment, served", [("dev", True), ("staging", False), ("production", False)])
async def test_docs_only_outside_production(environment, served):
    from app.main import create_app

    strong = {"jwt_secret": "s" * 48, "encryption_key": base64.b64encode(b"k" * 32).decode(),
              "stripe_webhook_secret": "whsec_strong_secret", "stripe_secret_key": "sk_live_strong",
              "mail_backend": "sendgrid", "sendgrid_api_key": "SG.key", "metrics_token": "scrape",
              "cors_origins": ["https://app.example.com"], "stripe_api_base": "", "stripe_simulate_connect": False,
              "faults": "", "expose_db_commands": False}
    settings = Settings(_env_file=None, environment=environment, **(strong if environment != "dev" else {}))
    application = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t") as http:
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert ((await http.get(path)).status_code == 200) is served, (environment, path)
    if served:
        assert "ErrorBody" in application.openapi()["components"]["schemas"]
