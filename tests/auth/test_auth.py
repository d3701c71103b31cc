import asyncio
import time
from datetime import timedelta

from jose import jwt

from app.auth.models import OneTimeToken, RefreshToken
from app.config import get_settings
from app.kit.security import hash_token
from app.kit.timeutil import utcnow
from tests.fixtures.factories import PASSWORD, bearer, drain_jobs, outbox, token_from_mail, unique_email


async def test_new_user_scenario(client, actors):
    """register -> read token from outbox -> verify -> login -> me -> refresh -> reuse old refresh."""
    email = unique_email("tester")
    resp = await client.post(
        "/api/auth/register", json={"email": email, "password": PASSWORD, "role": "tester", "display_name": "Tess"}
    )
    assert resp.status_code == 201
    body = resp.json()
    assert body == {"id": body["id"], "email": email, "role": "tester", "email_verified": False}

    login = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 403 and login.json()["error"] == "email_not_verified"

    await drain_jobs()
    [mail] = outbox(email)
    assert "Verify" in mail["Subject"]
    token = token_from_mail(mail)
    assert (await client.post("/api/auth/verify-email", json={"token": token})).status_code == 200

    tokens = (await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})).json()
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 900
    me = await client.get("/api/users/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    assert me.json()["email"] == email and me.json()["email_verified"] is True
    assert me.json()["qualification"]["status"] == "not_attempted" and "membership" not in me.json()

    rotated = await client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert rotated.status_code == 200
    new_pair = rotated.json()
    assert new_pair["refresh_token"] != tokens["refresh_token"]

    reused = await client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert reused.status_code == 401 and reused.json()["error"] == "refresh_token_reused"
    # the whole family is revoked, including the token issued by the rotation
    after = await client.post("/api/auth/refresh", json={"refresh_token": new_pair["refresh_token"]})
    assert after.status_code == 401
    family = await RefreshToken.find(RefreshToken.user_id == (await RefreshToken.find_one()).user_id).to_list()
    assert family and all(t.revoked_at is not None for t in family)


async def test_register_conflicts_and_validation(client, actors):
    user = await actors.register("builder")
    dup = await client.post(
        "/api/auth/register",
        json={"email": user["email"].upper(), "password": PASSWORD, "role": "builder", "display_name": "B"},
    )
    assert dup.status_code == 409 and dup.json()["error"] == "email_taken"

    weak = await client.post(
        "/api/auth/register", json={"email": unique_email(), "password": "short1", "role": "tester", "display_name": "T"}
    )
    assert weak.status_code == 422 and weak.json()["error"] == "weak_password"
    for bad in ("aaaaaaaaaaaa", "password123", "1234567890123"):
        resp = await client.post(
            "/api/auth/register", json={"email": unique_email(), "password": bad, "role": "tester", "display_name": "T"}
        )
        assert resp.status_code == 422, bad

    admin = await client.post(
        "/api/auth/register", json={"email": unique_email(), "password": PASSWORD, "role": "admin", "display_name": "A"}
    )
    assert admin.status_code == 422  # admins come from the CLI only

    extra = await client.post(
        "/api/auth/register",
        json={"email": unique_email(), "password": PASSWORD, "role": "tester", "display_name": "T", "is_admin": True},
    )
    assert extra.status_code == 422 and extra.json()["error"] == "validation_error"
    assert "correct-horse" not in extra.text  # the password is not echoed back


async def test_operator_injection_and_malformed_input(client, actors):
    user = await actors.signed_in("tester")
    injected = await client.post("/api/auth/login", json={"email": {"$gt": ""}, "password": {"$ne": None}})
    assert injected.status_code == 422
    malformed = await client.post(
        "/api/auth/login", content=b'{"email": "x@y.z", "password": ', headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422 and malformed.json()["error"] == "validation_error"
    huge = await client.post("/api/auth/login", json={"email": user["email"], "password": "x" * 5000})
    assert huge.status_code == 422
    long_name = await client.patch("/api/users/me", json={"display_name": "n" * 500}, headers=user["headers"])
    assert long_name.status_code == 422
    not_json = await client.post("/api/auth/login", content=b"email=a", headers={"content-type": "text/plain"})
    assert not_json.status_code == 422


async def test_bad_credentials_and_unknown_email(client, actors):
    user = await actors.signed_in("builder")
    wrong = await client.post("/api/auth/login", json={"email": user["email"], "password": "wrong-password-1"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_credentials"
    unknown = await client.post("/api/auth/login", json={"email": "nobody@example.com", "password": PASSWORD})
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_credentials"


async def test_login_rate_limit_per_ip(client, actors):
    user = await actors.register("tester")
    codes = []
    for _ in range(6):
        resp = await client.post("/api/auth/login", json={"email": user["email"], "password": "nope-nope-1"})
        codes.append(resp.status_code)
    assert codes[:5] == [401] * 5 and codes[5] == 429
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert resp.json()["error"] == "rate_limited"


async def test_general_rate_limit_per_user(client, actors, settings):
    user = await actors.signed_in("tester")
    settings.user_rate_per_minute = 3
    codes = [(await client.get("/api/users/me", headers=user["headers"])).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


async def test_verification_token_single_use_and_expiry(client, actors):
    user = await actors.register("tester")
    await drain_jobs()
    token = token_from_mail(outbox(user["email"])[-1])
    assert (await client.post("/api/auth/verify-email", json={"token": token})).status_code == 200
    again = await client.post("/api/auth/verify-email", json={"token": token})
    assert again.status_code == 400 and again.json()["error"] == "invalid_one_time_token"

    other = await actors.register("tester")
    await drain_jobs()
    token = token_from_mail(outbox(other["email"])[-1])
    await OneTimeToken.find(OneTimeToken.token_hash == hash_token(token)).update(
        {"$set": {"expires_at": utcnow() - timedelta(seconds=1)}}
    )
    expired = await client.post("/api/auth/verify-email", json={"token": token})
    assert expired.status_code == 400
    bogus = await client.post("/api/auth/verify-email", json={"token": "x" * 43})
    assert bogus.status_code == 400


async def test_resend_verification(client, actors):
    user = await actors.register("builder")
    resp = await client.post("/api/auth/verify-email/resend", json={"email": user["email"]})
    assert resp.status_code == 202
    await drain_jobs()
    assert len(outbox(user["email"])) == 2
    unknown = await client.post("/api/auth/verify-email/resend", json={"email": "ghost@example.com"})
    assert unknown.status_code == 202


async def test_bad_access_tokens(client, actors):
    user = await actors.signed_in("tester")
    settings = get_settings()
    now = int(time.time())
    claims = {"sub": user["id"], "role": "tester", "type": "access", "iat": now, "exp": now + 60}
    expired = jwt.encode({**claims, "iat": now - 120, "exp": now - 60}, settings.jwt_secret, algorithm="HS256")
    tampered = user["tokens"]["access_token"][:-3] + ("AAA" if not user["tokens"]["access_token"].endswith("AAA") else "BBB")
    other_key = jwt.encode(claims, "another-secret-that-is-long-enough-000", algorithm="HS256")
    header_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"
    import base64
    import json

    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    alg_none = f"{header_none}.{payload}."
    refresh_as_access = user["tokens"]["refresh_token"]
    wrong_type = jwt.encode({**claims, "type": "refresh"}, settings.jwt_secret, algorithm="HS256")
    for token in (expired, tampered, other_key, alg_none, refresh_as_access, wrong_type, "garbage"):
        resp = await client.get("/api/users/me", headers=bearer(token))
        assert resp.status_code == 401, token
        assert resp.json()["error"] == "invalid_token"
    missing = await client.get("/api/users/me")
    assert missing.status_code == 401
    basic = await client.get("/api/users/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401


async def test_logout_revokes_session(client, actors):
    user = await actors.signed_in("tester")
    resp = await client.post("/api/auth/logout", json={"refresh_token": user["tokens"]["refresh_token"]})
    assert resp.status_code == 204
    again = await client.post("/api/auth/refresh", json={"refresh_token": user["tokens"]["refresh_token"]})
    assert again.status_code == 401
    unknown = await client.post("/api/auth/logout", json={"refresh_token": "z" * 43})
    assert unknown.status_code == 204


async def test_password_reset(client, actors):
    user = await actors.signed_in("builder")
    resp = await client.post("/api/auth/password-reset/request", json={"email": user["email"]})
    assert resp.status_code == 202
    ghost = await client.post("/api/auth/password-reset/request", json={"email": "ghost@example.com"})
    assert ghost.status_code == 202
    await drain_jobs()
    mail = [m for m in outbox(user["email"]) if "Reset" in m["Subject"]][-1]
    token = token_from_mail(mail)

    weak = await client.post("/api/auth/password-reset/confirm", json={"token": token, "new_password": "abc"})
    assert weak.status_code == 422
    # no pause: tokens issued in the same second as the reset are void too (token versions)
    ok = await client.post("/api/auth/password-reset/confirm", json={"token": token, "new_password": "brand-new-pass-77"})
    assert ok.status_code == 200
    reused = await client.post("/api/auth/password-reset/confirm", json={"token": token, "new_password": "another-pass-88"})
    assert reused.status_code == 400

    old_refresh = await client.post("/api/auth/refresh", json={"refresh_token": user["tokens"]["refresh_token"]})
    assert old_refresh.status_code == 401
    assert (await client.get("/api/users/me", headers=user["headers"])).status_code == 401
    assert (await client.post("/api/auth/login", json={"email": user["email"], "password": PASSWORD})).status_code == 401
    assert (await client.post("/api/auth/login", json={"email": user["email"], "password": "brand-new-pass-77"})).status_code == 200


async def test_concurrent_refresh_with_one_token_yields_one_pair(client, actors):
    user = await actors.signed_in("tester")
    results = await asyncio.gather(
        *[client.post("/api/auth/refresh", json={"refresh_token": user["tokens"]["refresh_token"]}) for _ in range(5)]
    )
    assert sorted(r.status_code for r in results).count(200) <= 1
    assert all(r.status_code in (200, 401) for r in results)


async def test_expired_or_unknown_refresh_token(client, actors):
    user = await actors.signed_in("tester")
    await RefreshToken.find(RefreshToken.token_hash == hash_token(user["tokens"]["refresh_token"])).update(
        {"$set": {"expires_at": utcnow() - timedelta(seconds=1)}}
    )
    expired = await client.post("/api/auth/refresh", json={"refresh_token": user["tokens"]["refresh_token"]})
    assert expired.status_code == 401 and expired.json()["error"] == "invalid_token"
    unknown = await client.post("/api/auth/refresh", json={"refresh_token": "q" * 43})
    assert unknown.status_code == 401
    short = await client.post("/api/auth/refresh", json={"refresh_token": "abc"})
    assert short.status_code == 422
