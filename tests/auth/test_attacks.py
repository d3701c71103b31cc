"""Each finding of the auth and request-edge review, attacked the way it was found."""

import asyncio
import email as email_lib
from datetime import timedelta
from pathlib import Path

import httpx
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from app.auth import service as auth_service
from app.auth.models import OneTimeToken, RefreshToken
from app.config import get_settings
from app.kit.redis import get_redis
from app.kit.timeutil import utcnow
from app.outbox.models import OutboxTask
from app.users.models import User
from tests.fixtures.factories import PASSWORD, drain_jobs, outbox, token_from_mail, unique_email

NEW_PASSWORD = "brand-new-pass-77"
PEER = "203.0.113.10"  # the conftest client's peer address


async def _reset_token(client, email: str) -> str:
    assert (await client.post("/api/auth/password-reset/request", json={"email": email})).status_code == 202
    await drain_jobs()
    return token_from_mail([m for m in outbox(email) if "Reset" in m["Subject"]][-1])


async def _delete_keys(pattern: str) -> None:
    await get_redis().delete(*[k async for k in get_redis().scan_iter(pattern)] or ["none"])


# -- reset-confirm burned CPU for anyone --------------------------------------------------------
async def test_bogus_reset_tokens_cost_no_hash_and_are_limited_per_ip(client, settings, monkeypatch):
    hashed = []
    real_hash = auth_service.hash_password

    async def counting_hash(password: str) -> str:
        hashed.append(password)
        return await real_hash(password)

    monkeypatch.setattr(auth_service, "hash_password", counting_hash)
    settings.reset_confirm_rate_per_ip_per_minute = 10
    answers = await asyncio.gather(
        *[
            client.post(
                "/api/auth/password-reset/confirm", json={"token": f"bogus-token-{i:08d}", "new_password": NEW_PASSWORD}
            )
            for i in range(12)
        ]
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [400] * 10 + [429] * 2
    assert hashed == []  # not one Argon2 hash for a token that does not exist


# -- /metrics grew without bound ----------------------------------------------------------------
async def test_made_up_methods_do_not_add_metric_series(client):
    for i in range(20):
        await client.request(f"M{i:04d}X", "/api/users/me")
    metrics = (await client.get("/metrics")).text
    assert "M0001X" not in metrics and 'method="OTHER"' in metrics
    series = [line for line in metrics.splitlines() if line.startswith("http_requests_total{")]
    assert len([line for line in series if 'method="OTHER"' in line]) == 1


# -- our emails carried attacker text -----------------------------------------------------------
async def test_display_names_with_control_characters_are_refused(client, actors):
    for name in ("Eve\n\nYour account is locked, log in at http://evil.example", "Eve\r\nBcc: x", "Eve\u2028x", "\x00"):
        resp = await client.post(
            "/api/auth/register",
            json={"email": unique_email(), "password": PASSWORD, "role": "tester", "display_name": name},
        )
        assert resp.status_code == 422, name
    user = await actors.signed_in("tester")
    patched = await client.patch("/api/users/me", json={"display_name": "Eve\nclick here"}, headers=user["headers"])
    assert patched.status_code == 422


async def test_mail_to_an_unproven_address_carries_no_user_text(client):
    email = unique_email()
    await client.post(
        "/api/auth/register",
        json={"email": email, "password": PASSWORD, "role": "tester", "display_name": "Visit evil dot example"},
    )
    await drain_jobs()
    [mail] = outbox(email)
    assert "evil" not in mail.get_payload()


# -- an address could be squatted before its owner signed up ------------------------------------
async def _squat(client, email: str) -> None:
    resp = await client.post(
        "/api/auth/register",
        json={"email": email, "password": "attacker-pass-99", "role": "tester", "display_name": "Mallory"},
    )
    assert resp.status_code == 201
    await drain_jobs()


async def test_a_squatted_address_is_freed_after_the_token_lifetime(client, actors):
    email = unique_email("victim")
    await _squat(client, email)
    early = await client.post(
        "/api/auth/register", json={"email": email, "password": PASSWORD, "role": "builder", "display_name": "Victim"}
    )
    assert early.status_code == 409  # while the token could still confirm it
    long_ago = utcnow() - timedelta(days=2)
    await User.find(User.email == email).update({"$set": {"created_at": long_ago}})
    await OneTimeToken.find_all().update({"$set": {"expires_at": long_ago}})

    for stale in Path(get_settings().mail_outbox_dir).glob("*.eml"):  # the squatter's mail; its token is dead
        stale.unlink()
    owner = await client.post(
        "/api/auth/register", json={"email": email, "password": PASSWORD, "role": "builder", "display_name": "Victim"}
    )
    assert owner.status_code == 201
    await actors.verify(email)
    squatter = await client.post("/api/auth/login", json={"email": email, "password": "attacker-pass-99"})
    assert squatter.status_code == 401
    assert (await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})).status_code == 200


async def test_a_password_reset_takes_a_squatted_account_back_at_once(client):
    email = unique_email("victim")
    await _squat(client, email)
    token = await _reset_token(client, email)
    assert (
        await client.post("/api/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD})
    ).status_code == 200
    assert (
        await client.post("/api/auth/login", json={"email": email, "password": "attacker-pass-99"})
    ).status_code == 401
    assert (await client.post("/api/auth/login", json={"email": email, "password": NEW_PASSWORD})).status_code == 200


async def test_resend_cannot_keep_a_squatted_address(client):
    """The squatter resends the verification mail after the first token died, to renew the hold:
    the owner can still register, and the mail the owner then clicks does not hand the account over."""
    email = unique_email("victim")
    await _squat(client, email)
    long_ago = utcnow() - timedelta(days=2)  # well past EMAIL_TOKEN_TTL_SECONDS
    await User.find(User.email == email).update({"$set": {"created_at": long_ago}})
    await OneTimeToken.find_all().update({"$set": {"expires_at": long_ago}})
    for stale in Path(get_settings().mail_outbox_dir).glob("*.eml"):  # the first mail; its token is dead
        stale.unlink()
    assert (await client.post("/api/auth/verify-email/resend", json={"email": email})).status_code == 202
    await drain_jobs()
    owner = await client.post(
        "/api/auth/register", json={"email": email, "password": PASSWORD, "role": "builder", "display_name": "Victim"}
    )
    await drain_jobs()
    # the owner clicks the newest mail in the inbox (if refused: the squatted account's "someone signed up")
    newest = max(Path(get_settings().mail_outbox_dir).glob("*.eml"), key=lambda path: path.stat().st_mtime_ns)
    token = token_from_mail(email_lib.message_from_bytes(newest.read_bytes()))
    assert (await client.post("/api/auth/verify-email", json={"token": token})).status_code == 200
    squatter = await client.post("/api/auth/login", json={"email": email, "password": "attacker-pass-99"})
    assert owner.status_code == 201 and squatter.status_code == 401, (owner.text, squatter.status_code)


# -- behind a proxy, one client locked everyone out ---------------------------------------------
async def _login(client, email: str, password: str, forwarded_for: str) -> httpx.Response:
    return await client.post(
        "/api/auth/login", json={"email": email, "password": password}, headers={"X-Forwarded-For": forwarded_for}
    )


async def _failed_logins(client, forwarded_for: str, count: int) -> list[int]:
    """`count` wrong passwords, each for a fresh address, so only the per-IP limit can answer 429."""
    return [(await _login(client, unique_email(), "wrong-pass-11", forwarded_for)).status_code for _ in range(count)]


async def test_a_trusted_proxy_forwards_the_client_address(client, settings):
    settings.forwarded_allow_ips = PEER
    assert await _failed_logins(client, "198.51.100.1", 6) == [401] * 5 + [429]
    assert await _failed_logins(client, "198.51.100.2", 1) == [401]  # another client behind the same proxy
    # a forged leftmost entry does not buy a fresh budget: the proxy appended the real address
    assert await _failed_logins(client, "192.0.2.99, 198.51.100.1", 1) == [429]


async def test_an_untrusted_peer_cannot_choose_its_address(client, settings):
    settings.forwarded_allow_ips = "10.0.0.0/8"
    codes = [(await _failed_logins(client, f"198.51.100.{i}", 1))[0] for i in range(6)]
    assert codes == [401] * 5 + [429]


async def test_a_trust_everything_proxy_setting_does_not_let_clients_pick_their_address(client, settings):
    """FORWARDED_ALLOW_IPS="*": one client forges a new leftmost hop each time; it is still limited."""
    settings.forwarded_allow_ips = "*"
    codes = [(await _failed_logins(client, f"10.9.{i}.1, 198.51.100.7", 1))[0] for i in range(8)]
    assert 429 in codes


async def test_ipv6_clients_cannot_rotate_addresses_within_their_prefix(app):
    """One client walks through the addresses of its /64: they share one budget."""
    codes = []
    for i in range(8):
        transport = httpx.ASGITransport(app=app, client=(f"2001:db8:1:2::{i + 1:x}", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            login = await http.post("/api/auth/login", json={"email": unique_email(), "password": "wrong-pass-11"})
            codes.append(login.status_code)
    assert 429 in codes


async def test_a_trusted_proxy_on_a_dual_stack_socket_is_still_trusted(app, settings):
    """The trusted proxy arrives as an IPv4-mapped IPv6 peer: its clients keep their own budgets."""
    settings.forwarded_allow_ips = PEER
    transport = httpx.ASGITransport(app=app, client=(f"::ffff:{PEER}", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        codes = [(await _failed_logins(http, f"198.51.100.{i}", 1))[0] for i in range(6)]
    assert codes == [401] * 6


# -- mail routes: per IP and per address, and the same path whether the account exists ----------
async def test_mail_routes_are_limited_per_address(client, actors):
    user = await actors.register("tester")
    codes = [
        (
            await client.post(
                "/api/auth/verify-email/resend",
                json={"email": user["email"]},
                headers={"X-Forwarded-For": f"198.51.100.{i}"},
            )
        ).status_code
        for i in range(3)
    ]
    assert codes == [202, 202, 429]  # the register mail counted too; many IPs do not help


async def test_mail_routes_are_limited_per_ip(client, settings):
    settings.email_rate_per_ip_per_hour = 3
    sprayed = [
        (await client.post("/api/auth/password-reset/request", json={"email": unique_email()})).status_code
        for _ in range(4)
    ]
    assert sprayed == [202, 202, 202, 429]


async def test_reset_requests_take_the_same_path_for_unknown_addresses(client, actors):
    user = await actors.signed_in("tester")
    ghost = unique_email("ghost")
    for email in (user["email"], ghost):
        assert (await client.post("/api/auth/password-reset/request", json={"email": email})).status_code == 202
    tasks = await OutboxTask.find({"_id": {"$regex": "^send_password_reset:"}}).to_list()
    assert sorted(task.args[0] for task in tasks) == sorted([user["email"], ghost])  # one queued task each
    await drain_jobs()
    assert outbox(ghost) == [] and len([m for m in outbox(user["email"]) if "Reset" in m["Subject"]]) == 1


# -- per-account login backoff ------------------------------------------------------------------
async def test_failed_logins_back_off_per_account_and_a_reset_lifts_it(client, actors, settings):
    settings.login_rate_per_minute = 1000
    user = await actors.signed_in("tester")
    wrong = [
        (
            await client.post(
                "/api/auth/login",
                json={"email": user["email"], "password": "wrong-pass-11"},
                headers={"X-Forwarded-For": f"198.51.100.{i}"},
            )
        ).status_code
        for i in range(6)
    ]
    assert wrong == [401] * 5 + [429]
    locked = await client.post("/api/auth/login", json={"email": user["email"], "password": PASSWORD})
    assert locked.status_code == 429 and locked.json()["error"] == "login_throttled"
    assert 1 <= int(locked.headers["Retry-After"]) <= 2
    # unknown accounts behave alike, so the throttle reveals nothing
    ghost = [
        (await client.post("/api/auth/login", json={"email": "ghost@example.com", "password": "x"})).status_code
        for _ in range(6)
    ]
    assert ghost == [401] * 5 + [429]
    token = await _reset_token(client, user["email"])
    await client.post("/api/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD})
    assert (
        await client.post("/api/auth/login", json={"email": user["email"], "password": NEW_PASSWORD})
    ).status_code == 200


async def test_the_backoff_grows_and_is_capped(client, actors, settings):
    settings.login_rate_per_minute = 1000
    settings.login_backoff_max_seconds = 5
    user = await actors.signed_in("tester")
    waits = []
    for _ in range(9):
        await _delete_keys("login-lock:*")
        resp = await client.post("/api/auth/login", json={"email": user["email"], "password": "wrong-pass-11"})
        assert resp.status_code == 401
        waits.append(max([await get_redis().ttl(k) async for k in get_redis().scan_iter("login-lock:*")] or [0]))
    assert waits == [0, 0, 0, 0, 2, 4, 5, 5, 5]


async def test_a_parallel_burst_is_not_held_to_one_guess_per_backoff_window(client, actors, settings):
    """Once a backoff window ends, a burst of guesses from many addresses gets one password checked."""
    settings.forwarded_allow_ips = PEER  # many client addresses, each well under the per-IP limit
    victim = await actors.signed_in("tester")
    # production's Argon2 parameters (the suite's are cheap): ~0.2 s a check, time for the burst to overlap
    real_hash = PasswordHash.recommended().hash(PASSWORD)
    await User.find(User.email == victim["email"]).update({"$set": {"password_hash": real_hash}})
    for i in range(5):
        assert (await _login(client, victim["email"], "wrong-pass-11", f"198.51.100.{i}")).status_code == 401
    await asyncio.sleep(2.2)  # the 2 s backoff after the 5th failure is over
    burst = await asyncio.gather(
        *[_login(client, victim["email"], f"guess-{i:04d}-pass", f"192.0.2.{i}") for i in range(10)]
    )
    checked = [r.status_code for r in burst].count(401)  # a 401 means the password was really checked
    assert checked <= 1, f"{checked} passwords were checked inside one backoff window"


async def test_an_attacker_cannot_keep_a_user_from_both_logging_in_and_resetting(client, actors, settings):
    """The attacker keeps the account's login locked and spends its mail budget with resends for a
    verified address: the owner can still either log in or request a reset."""
    settings.forwarded_allow_ips = PEER
    victim = await actors.signed_in("tester")
    await drain_jobs()
    await _delete_keys("rl:mail:*")  # the victim signed up long ago: that mail is not in this hour's budget
    for i in range(15):  # one failure per window; the test skips the waits by deleting the lock
        await _delete_keys("login-lock:*")
        assert (await _login(client, victim["email"], "wrong-pass-11", f"198.51.100.{i}")).status_code == 401
    for i in range(3):  # a verified address is sent nothing, but the requests count
        r = await client.post("/api/auth/verify-email/resend", json={"email": victim["email"]},
                              headers={"X-Forwarded-For": f"192.0.2.{i}"})
        assert r.status_code == 202
    await drain_jobs()
    assert outbox(victim["email"])[-1]["Subject"].startswith("Verify")  # only the sign-up mail: nothing new

    login = await _login(client, victim["email"], PASSWORD, "198.51.100.200")
    reset = await client.post("/api/auth/password-reset/request", json={"email": victim["email"]},
                              headers={"X-Forwarded-For": "198.51.100.200"})
    # README: "a password reset still works"
    assert login.status_code == 200 or reset.status_code == 202, (
        f"login {login.status_code} (Retry-After {login.headers.get('retry-after')}), "
        f"reset {reset.status_code} (Retry-After {reset.headers.get('retry-after')})"
    )


# -- token cutoff, logout and the family's age ---------------------------------------------------
async def test_a_reset_voids_tokens_issued_in_the_same_second(client, actors):
    user = await actors.signed_in("builder")
    token = await _reset_token(client, user["email"])
    await client.post("/api/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD})
    assert (await client.get("/api/users/me", headers=user["headers"])).status_code == 401
    fresh = await client.post("/api/auth/login", json={"email": user["email"], "password": NEW_PASSWORD})
    me = await client.get("/api/users/me", headers={"Authorization": f"Bearer {fresh.json()['access_token']}"})
    assert me.status_code == 200


async def test_a_reset_voids_the_other_unused_reset_tokens(client, actors):
    user = await actors.signed_in("tester")
    first = await _reset_token(client, user["email"])
    second = await _reset_token(client, user["email"])
    assert (
        await client.post("/api/auth/password-reset/confirm", json={"token": second, "new_password": NEW_PASSWORD})
    ).status_code == 200
    stale = await client.post(
        "/api/auth/password-reset/confirm", json={"token": first, "new_password": "other-pass-123"}
    )
    assert stale.status_code == 400 and stale.json()["error"] == "invalid_one_time_token"


async def test_logout_revokes_the_access_token_too(client, actors):
    user = await actors.signed_in("tester")
    other_session = await actors.login(user["email"])
    await client.post("/api/auth/logout", json={"refresh_token": user["tokens"]["refresh_token"]})
    assert (await client.get("/api/users/me", headers=user["headers"])).status_code == 401
    still = await client.get("/api/users/me", headers={"Authorization": f"Bearer {other_session['access_token']}"})
    assert still.status_code == 200  # only the logged-out session ends


async def test_a_refresh_family_has_a_hard_maximum_age(client, actors, settings):
    user = await actors.signed_in("tester")
    pair = (await client.post("/api/auth/refresh", json={"refresh_token": user["tokens"]["refresh_token"]})).json()
    started = utcnow() - timedelta(seconds=settings.refresh_family_max_age_seconds + 5)
    await RefreshToken.find_all().update({"$set": {"family_started_at": started}})
    resp = await client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_token"


# -- profiles, hashes, headers -------------------------------------------------------------------
async def test_public_profiles_hide_admins_and_disabled_accounts(client, actors):
    viewer = await actors.signed_in("builder")
    admin = await actors.admin()
    tester = await actors.signed_in("tester")
    assert (await client.get(f"/api/users/{tester['id']}", headers=viewer["headers"])).status_code == 200
    assert (await client.get(f"/api/users/{admin['id']}", headers=viewer["headers"])).status_code == 404
    await User.find(User.email == tester["email"]).update({"$set": {"is_active": False}})
    assert (await client.get(f"/api/users/{tester['id']}", headers=viewer["headers"])).status_code == 404


async def test_login_rehashes_an_outdated_hash(client, actors):
    user = await actors.signed_in("tester")
    old = PasswordHash((Argon2Hasher(time_cost=2, memory_cost=2048, parallelism=1),)).hash(PASSWORD)
    await User.find(User.email == user["email"]).update({"$set": {"password_hash": old}})
    assert (
        await client.post("/api/auth/login", json={"email": user["email"], "password": PASSWORD})
    ).status_code == 200
    stored = (await User.find_one(User.email == user["email"])).password_hash
    assert stored != old and "m=1024" in stored
    assert (
        await client.post("/api/auth/login", json={"email": user["email"], "password": PASSWORD})
    ).status_code == 200


async def test_responses_carry_security_headers(client):
    resp = await client.get("/health")
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    assert resp.headers["referrer-policy"] == "no-referrer"


# -- streamed bodies ----------------------------------------------------------------------------
async def test_a_chunked_body_over_the_cap_is_refused(client, settings):
    async def chunks():
        for _ in range(30):
            yield b" " * 50_000  # 1.5 MB, no Content-Length

    resp = await client.post("/api/auth/login", content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and resp.json()["error"] == "payload_too_large"


async def test_a_small_chunked_body_still_works(client, actors):
    user = await actors.register("tester")

    async def chunks():
        yield b'{"email": "' + user["email"].encode() + b'", '
        yield b'"password": "wrong-pass-11"}'

    resp = await client.post("/api/auth/login", content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 401


async def test_production_serves_no_docs(settings):
    from app.main import create_app
    from tests.test_config import production

    application = create_app(production())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://test") as http:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await http.get(path)).status_code == 404, path
        resp = await http.get("/health")
        assert resp.headers["strict-transport-security"].startswith("max-age=")


async def test_metrics_need_their_token(client, settings):
    settings.metrics_token = "m" * 32
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
    assert (await client.get("/metrics", headers={"Authorization": f"Bearer {'m' * 32}"})).status_code == 200


async def test_a_non_ascii_metrics_token_is_a_401_not_a_500(client, settings):
    settings.metrics_token = "m" * 32
    resp = await client.get("/metrics", headers={"Authorization": "Bearer \u00e9".encode("latin-1")})
    assert resp.status_code == 401, resp.text
