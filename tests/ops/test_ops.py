from fastapi import APIRouter


async def test_health_endpoints(client):
    from app.ops import health

    await health.probe()  # the snapshot is the background probe's: take a fresh one for this test's state
    assert (await client.get("/health")).json() == {"status": "ok", "problems": []}
    assert (await client.get("/health/db")).status_code == 200
    assert (await client.get("/health/redis")).status_code == 200


async def test_health_reports_outages(client, monkeypatch):
    from app import db
    from app.ops import router as ops

    async def down(*_, **__):
        return False

    monkeypatch.setattr(db, "ping", down)
    monkeypatch.setattr(ops, "_redis_ok", down)
    assert (await client.get("/health/db")).status_code == 503
    assert (await client.get("/health/redis")).status_code == 503


async def test_request_id_is_generated_or_echoed(client):
    generated = await client.get("/health")
    assert len(generated.headers["x-request-id"]) == 32
    echoed = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    hostile = await client.get("/health", headers={"X-Request-ID": "bad id\r<script>"[:6] + " <x>"})
    assert hostile.headers["x-request-id"] != "bad id <x>" and len(hostile.headers["x-request-id"]) == 32


async def test_metrics_exposes_requests_and_queue_depth(client):
    await client.get("/health")
    body = (await client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/health",status="200"}' in body
    assert "http_request_duration_seconds_bucket" in body
    assert 'rq_queue_depth{queue="high"}' in body


async def test_metrics_token(client, settings):
    settings.metrics_token = "scrape-secret"
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})).status_code == 200


async def test_unknown_error_is_500_without_trace(app, client):
    probe = APIRouter()

    @probe.get("/_boom")
    async def boom():
        raise RuntimeError("secret internals")

    app.include_router(probe)
    try:
        resp = await client.get("/_boom", headers={"X-Request-ID": "req-500"})
    finally:
        app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", "") != "/_boom"]
    assert resp.status_code == 500
    assert resp.json() == {"error": "internal_error", "detail": {"request_id": "req-500"}}
    assert "secret internals" not in resp.text and resp.headers["x-request-id"] == "req-500"


async def test_not_found_and_method_and_body_limit(client, settings):
    missing = await client.get("/api/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong_method = await client.delete("/health")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"
    big = await client.post("/api/auth/login", content=b"{" + b" " * 2_000_000 + b"}",
                            headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.json()["error"] == "payload_too_large"


async def test_cors_preflight(client):
    resp = await client.options(
        "/api/auth/login",
        headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"},
    )
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == "http://localhost:5173"


async def test_openapi_documents_the_api(client):
    spec = (await client.get("/openapi.json")).json()
    for path in ("/api/auth/register", "/api/users/me", "/api/wallet/deposits", "/api/payouts",
                 "/api/escrow/transactions", "/api/admin/ledger/check", "/api/webhooks/stripe"):
        assert path in spec["paths"], path
    assert (await client.get("/docs")).status_code == 200


async def test_health_turns_degraded_and_metrics_carry_the_figures(client, monkeypatch):
    from app import db
    from app.ops import health

    async def down(*_, **__):
        return False

    monkeypatch.setattr(db, "ping", down)
    await health.probe()
    assert (await client.get("/health")).json() == {"status": "degraded", "problems": ["mongodb"]}
    body = (await client.get("/metrics")).text
    assert 'dependency_up{dependency="mongodb"} 0.0' in body and 'dependency_up{dependency="redis"} 1.0' in body
    monkeypatch.undo()
    await health.probe()
    assert (await client.get("/health")).json()["status"] == "ok"
    assert 'outbox_tasks{state="dead"} 0.0' in (await client.get("/metrics")).text
