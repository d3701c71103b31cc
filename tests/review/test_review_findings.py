"""Review of issue 9 (git diff 318866e..HEAD): each test makes one attack and asserts the behaviour
the README's Security section promises. A FAILING test here demonstrates a real bug."""

import asyncio
import email as email_lib
import os
import stat
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pwdlib import PasswordHash

from app.auth.models import OneTimeToken
from app.config import get_settings
from app.kit.redis import get_redis
from app.kit.timeutil import utcnow
from app.users.models import User
from tests.fixtures.factories import PASSWORD, drain_jobs, outbox, token_from_mail, unique_email

PEER = "203.0.113.10"  # the conftest client's peer address
ROOT = Path(__file__).resolve().parents[2]


def _login(client, email, password, xff):
    return client.post("/api/auth/login", json={"email": email, "password": password},
                       headers={"X-Forwarded-For": xff})


# -- 1. the per-account backoff is check-then-act: a parallel burst gets every guess checked --------
async def test_a_parallel_burst_is_not_held_to_one_guess_per_backoff_window(client, actors, settings):
    settings.forwarded_allow_ips = PEER  # many client addresses, each well under the per-IP limit
    victim = await actors.signed_in("tester")
    # the victim's stored hash with production's Argon2 parameters (the suite's are cheap): ~0.2 s a check
    real_hash = PasswordHash.recommended().hash(PASSWORD)
    await User.find(User.email == victim["email"]).update({"$set": {"password_hash": real_hash}})
    for i in range(5):
        assert (await _login(client, victim["email"], "wrong-pass-11", f"198.51.100.{i}")).status_code == 401
    await asyncio.sleep(2.2)  # the 2 s backoff after the 5th failure is over
    burst = await asyncio.gather(*[_login(client, victim["email"], f"guess-{i:04d}-pass", f"192.0.2.{i}")
                                   for i in range(10)])
    checked = [r.status_code for r in burst].count(401)  # a 401 means the password was really checked
    assert checked <= 1, f"{checked} passwords were checked inside one backoff window"


# -- 2. an attacker holds a real user out indefinitely: login lock + the shared per-address budget ---
async def test_an_attacker_cannot_keep_a_user_from_both_logging_in_and_resetting(client, actors, settings):
    settings.forwarded_allow_ips = PEER
    victim = await actors.signed_in("tester")
    await drain_jobs()
    # the victim signed up long ago: their sign-up mail is not in this hour's per-address budget
    await get_redis().delete(*[k async for k in get_redis().scan_iter("rl:mail:*")] or ["none"])
    for i in range(15):  # one failure per window; the test skips the waits by deleting the lock
        await get_redis().delete(*[k async for k in get_redis().scan_iter("login-lock:*")] or ["none"])
        assert (await _login(client, victim["email"], "wrong-pass-11", f"198.51.100.{i}")).status_code == 401
    # from now on, ONE failed login every 15 min keeps the lock (the failure counter lives 24 h)
    # resend-verification for a VERIFIED address sends nothing, yet spends the address's mail budget
    for i in range(3):
        r = await client.post("/api/auth/verify-email/resend", json={"email": victim["email"]},
                              headers={"X-Forwarded-For": f"192.0.2.{i}"})
        assert r.status_code == 202
    await drain_jobs()
    assert outbox(victim["email"])[-1]["Subject"].startswith("Verify")  # only the sign-up mail: nothing new

    login = await _login(client, victim["email"], PASSWORD, "198.51.100.200")
    reset = await client.post("/api/auth/password-reset/request", json={"email": victim["email"]},
                              headers={"X-Forwarded-For": "198.51.100.200"})
    print("victim login:", login.status_code, login.headers.get("retry-after"),
          "| victim reset request:", reset.status_code, reset.headers.get("retry-after"))
    # README: "a password reset still works" -- it does not: both ways in are shut for the hour
    assert login.status_code == 200 or reset.status_code == 202


# -- 3. a squat is renewable with resend, and the victim's click still hands the account over ------
async def test_resend_cannot_keep_a_squatted_address(client):
    email = unique_email("victim")
    squat = await client.post("/api/auth/register", json={
        "email": email, "password": "attacker-pass-99", "role": "tester", "display_name": "Mallory"})
    assert squat.status_code == 201
    await drain_jobs()
    long_ago = utcnow() - timedelta(days=2)  # well past EMAIL_TOKEN_TTL_SECONDS
    await User.find(User.email == email).update({"$set": {"created_at": long_ago}})
    await OneTimeToken.find_all().update({"$set": {"expires_at": long_ago}})
    for stale in Path(get_settings().mail_outbox_dir).glob("*.eml"):  # the first mail; its token is dead
        stale.unlink()
    # the squatter renews the hold: one resend a day
    assert (await client.post("/api/auth/verify-email/resend", json={"email": email})).status_code == 202
    await drain_jobs()
    owner = await client.post("/api/auth/register", json={
        "email": email, "password": PASSWORD, "role": "builder", "display_name": "Victim"})
    print("owner's registration after 2 days:", owner.status_code, owner.text)
    await drain_jobs()
    # the owner, refused, clicks the newest mail in their inbox ("Someone (we hope you) signed up")
    newest = max(Path(get_settings().mail_outbox_dir).glob("*.eml"), key=lambda path: path.stat().st_mtime_ns)
    token = token_from_mail(email_lib.message_from_bytes(newest.read_bytes()))
    assert (await client.post("/api/auth/verify-email", json={"token": token})).status_code == 200
    squatter = await client.post("/api/auth/login", json={"email": email, "password": "attacker-pass-99"})
    print("squatter's login after the owner verified:", squatter.status_code)
    assert owner.status_code == 201 and squatter.status_code == 401


# -- 4. FORWARDED_ALLOW_IPS="*" makes the client-written leftmost hop the rate-limit key ------------
async def test_a_trust_everything_proxy_setting_does_not_let_clients_pick_their_address(client, settings):
    settings.forwarded_allow_ips = "*"
    codes = [(await _login(client, unique_email(), "wrong-pass-11", f"10.9.{i}.1, 198.51.100.7")).status_code
             for i in range(8)]
    print("8 failed logins from one real client (198.51.100.7), forged leftmost hops:", codes)
    assert 429 in codes


def test_production_refuses_a_wildcard_forwarded_allow_ips():
    from tests.test_config import production

    with pytest.raises(Exception):
        production(forwarded_allow_ips="*")


# -- 5. a FORWARDED_ALLOW_IPS entry uvicorn accepts (a name) turns every auth call into a 500 ------
async def test_a_non_ip_forwarded_allow_ips_entry_is_refused_at_start_not_500_at_runtime(client, settings):
    from app.config import Settings

    with pytest.raises(Exception, match="lb.internal"):  # refused when the settings load, not per request
        Settings(environment="test", forwarded_allow_ips="10.0.0.1, lb.internal", _env_file=None)


# -- 6. IPv6: every address of a /64 gets its own budget ---------------------------------------------
async def test_ipv6_clients_cannot_rotate_addresses_within_their_prefix(app):
    codes = []
    for i in range(8):
        transport = httpx.ASGITransport(app=app, client=(f"2001:db8:1:2::{i + 1:x}", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            codes.append((await http.post("/api/auth/login", json={"email": unique_email(),
                                                                   "password": "wrong-pass-11"})).status_code)
    print("8 failed logins from one IPv6 /64:", codes)
    assert 429 in codes


# -- 7. a trusted proxy seen as an IPv4-mapped IPv6 peer (dual-stack socket) is not trusted ---------
async def test_a_trusted_proxy_on_a_dual_stack_socket_is_still_trusted(app, settings):
    settings.forwarded_allow_ips = PEER
    transport = httpx.ASGITransport(app=app, client=(f"::ffff:{PEER}", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        codes = [(await http.post("/api/auth/login", json={"email": unique_email(), "password": "wrong-pass-11"},
                                  headers={"X-Forwarded-For": f"198.51.100.{i}"})).status_code for i in range(6)]
    print("6 clients behind ::ffff:" + PEER + ":", codes)
    assert codes == [401] * 6


# -- 8. /metrics: a non-ASCII Authorization header is a 500 ------------------------------------------
async def test_a_non_ascii_metrics_token_is_a_401_not_a_500(client, settings):
    settings.metrics_token = "m" * 32
    resp = await client.get("/metrics", headers={"Authorization": "Bearer \u00e9".encode("latin-1")})
    print("/metrics with 'Bearer \\xe9':", resp.status_code, resp.text)
    assert resp.status_code == 401


# -- 9. Sentry: passwords and tokens travel in stack-frame local variables ---------------------------
async def test_sentry_events_carry_no_passwords(client, settings, monkeypatch):
    import sentry_sdk

    from app.auth import service as auth_service
    from app.kit import error_reporting

    events: list = []
    real_init = sentry_sdk.init
    monkeypatch.setattr(sentry_sdk, "init", lambda **kw: real_init(**kw, transport=events.append))
    settings.sentry_dsn = "https://public@sentry.example/1"
    error_reporting.init(settings)  # exactly the app's options (before_send=scrub, no bodies, no PII)
    try:
        async def broken_hash(_password: str) -> str:
            raise RuntimeError("argon2 blew up")

        monkeypatch.setattr(auth_service, "hash_password", broken_hash)
        secret = f"Sup3r-{os.urandom(6).hex()}-77"  # made at run time: the test's own source lines are sent
        resp = await client.post("/api/auth/register", json={
            "email": unique_email(), "password": secret, "role": "tester", "display_name": "Tess"})
        assert resp.status_code == 500
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()
        real_init(dsn=None)
    sent = repr(events)
    print("events:", len(events), "| password in an event:", secret in sent)
    for event in events:
        for value in event.get("exception", {}).get("values", []):
            for frame in value.get("stacktrace", {}).get("frames", []):
                for name, var in (frame.get("vars") or {}).items():
                    if secret in repr(var):
                        print("  frame", frame.get("function"), "var", name, "=", repr(var)[:160])
    def where(node, path=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from where(v, f"{path}.{k}")
        elif isinstance(node, list | tuple):
            for i, v in enumerate(node):
                yield from where(v, f"{path}[{i}]")
        elif secret in repr(node):
            yield path
    print("secret at:", [p for ev in events for p in where(ev)][:10])
    assert events and secret not in sent


# -- 10. the CLI mixes a dev stack's env file into a shell that set production values ---------------
def test_the_cli_does_not_mix_a_dev_env_file_into_a_production_shell(tmp_path):
    from app.cli import load_run_env

    env_file = tmp_path / "env"
    env_file.write_text(f"# Written by scripts/run (stack pid {os.getpid()}) at now; removed when it stops.\n"
                        "ENVIRONMENT=dev\nMONGO_URI=mongodb://127.0.0.1:27018/?directConnection=true\n"
                        "MONGO_DB=peertest\nREDIS_URL=redis://127.0.0.1:6390/0\n"
                        "STRIPE_API_BASE=http://127.0.0.1:8420\nSTRIPE_SIMULATE_CONNECT=true\n"
                        "MAIL_BACKEND=outbox\n")
    # An operator's shell with production's database and secrets; ENVIRONMENT unset because the
    # app's own default is production.
    shell = {"MONGO_URI": "mongodb://db.prod.example:27017/?replicaSet=rs0", "JWT_SECRET": "j" * 48,
             "STRIPE_SECRET_KEY": "sk_live_x"}
    loaded = load_run_env(env_file, shell)
    print("loaded into the production shell:", loaded)
    assert not loaded


# -- 11. .run/env keeps the mode of a leftover temporary file --------------------------------------
def test_the_env_file_is_private_even_over_a_leftover_tmp(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from embedded.runfile import write_env_file

    (tmp_path / ".env.tmp").write_text("")
    os.chmod(tmp_path / ".env.tmp", 0o644)  # left by an interrupted write, or planted
    path = write_env_file({"JWT_SECRET": "s" * 40, "ENCRYPTION_KEY": "k" * 44}, tmp_path / "env")
    mode = stat.S_IMODE(path.stat().st_mode)
    print(f"env file mode: {mode:o}")
    assert mode == 0o600


# -- 12. key rotation: a value sealed before key ids existed is opened with the NEW key ------------
def test_a_legacy_value_still_opens_after_the_readme_rotation(settings):
    import base64

    from app.kit import crypto

    legacy = crypto.encrypt("Token: abc", b"outbox-email").split(".", 1)[1]  # the pre-change format
    old_id, old_key = settings.encryption_key_id, settings.encryption_key
    # README rotation: new key with a new id, the old one moved to ENCRYPTION_OLD_KEYS
    settings.encryption_key_id = "k2"
    settings.encryption_key = base64.b64encode(b"second-key-for-rotation-32-bytes").decode()
    settings.encryption_old_keys = f"{old_id}:{old_key}"
    try:
        opened = crypto.decrypt(legacy, b"outbox-email")
    except Exception as exc:  # noqa: BLE001
        opened = f"{type(exc).__name__}"
    print("legacy value after rotation:", opened)
    assert opened == "Token: abc"
