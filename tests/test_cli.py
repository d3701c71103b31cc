"""python -m app.cli, run as an operator would."""

import asyncio
import os
import socket
import sys
from pathlib import Path

from app import db
from app.cli import load_run_env
from app.kit import stackfile
from app.users.models import User

ROOT = Path(__file__).resolve().parents[1]
# The settings scripts/test gives the suite; a CLI that must find them elsewhere runs without them.
STACK_VARS = ("MONGO_URI", "MONGO_DB", "REDIS_URL", "ENVIRONMENT", "MAIL_OUTBOX_DIR", "MAIL_BACKEND")


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """The CLI with the suite's environment (or `env`); stdout and stderr together. PEERTEST_RUN_DIR
    points at a directory with no env file unless `env` says otherwise, so a developer's running
    stack never leaks in."""
    env = {**os.environ, "PEERTEST_RUN_DIR": str(ROOT / ".run" / "no-such-run-dir")} if env is None else env
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", *args, cwd=ROOT, env={**env, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, output.decode()


def without_stack_vars(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in STACK_VARS}, **extra}


def write_env_file(run_dir: Path, values: dict[str, str], pid: int | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "env"
    lines = [stackfile.header(pid or os.getpid(), "now"), *(f"{k}={v}" for k, v in values.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_create_admin_then_login(client):
    code, out = await cli("create-admin", "Ops@Example.com", "admin-pass-2026")
    assert code == 0, out
    admin = await User.find_one(User.email == "ops@example.com")
    assert admin.role == "admin" and admin.email_verified
    login = await client.post("/api/auth/login", json={"email": "ops@example.com", "password": "admin-pass-2026"})
    assert login.status_code == 200

    code, out = await cli("create-admin", "ops@example.com", "admin-pass-2026")
    assert code == 1 and "email_taken" in out
    code, out = await cli("create-admin", "weak@example.com", "short")
    assert code == 1 and "weak_password" in out
    assert await User.find_one(User.email == "weak@example.com") is None


async def test_ledger_check_command():
    code, out = await cli("ledger-check")
    assert code == 0 and "ok=True" in out, out


async def test_settings_missing_from_the_environment_come_from_the_run_env_file(tmp_path):
    """What scripts/run wrote fills in what the environment lacks; the environment wins."""
    write_env_file(tmp_path, {key: f"'{os.environ[key]}'" for key in ("MONGO_URI", "MONGO_DB", "REDIS_URL")}
                   | {"ENVIRONMENT": "test"})
    code, out = await cli("create-admin", "fromfile@example.com", "admin-pass-2026",
                          env=without_stack_vars(PEERTEST_RUN_DIR=str(tmp_path)))
    assert code == 0 and "admin created" in out, out
    assert (await User.find_one(User.email == "fromfile@example.com")).role == "admin"

    # The environment's value wins over the file's.
    other_db = f"{os.environ['MONGO_DB']}_env"
    code, out = await cli("create-admin", "fromenv@example.com", "admin-pass-2026",
                          env=without_stack_vars(PEERTEST_RUN_DIR=str(tmp_path), MONGO_DB=other_db))
    assert code == 0, out
    assert await User.find_one(User.email == "fromenv@example.com") is None  # not in the file's database
    await db.get_client().drop_database(other_db)

    # A file written for another environment is not mixed into this one.
    code, out = await cli("ledger-check", env=without_stack_vars(PEERTEST_RUN_DIR=str(tmp_path),
                                                                 ENVIRONMENT="production"))
    assert f"ignoring {tmp_path / 'env'}: it was written for ENVIRONMENT=test, and this one is production" in out
    assert code != 0 and "refusing to start in production" in out, out


async def test_unreachable_database_is_one_line_not_a_traceback(tmp_path):
    uri = f"mongodb://ops:s3cret@127.0.0.1:{closed_port()}/?directConnection=true"
    code, out = await cli("ledger-check", env=without_stack_vars(ENVIRONMENT="test", MONGO_URI=uri,
                                                                 PEERTEST_RUN_DIR=str(tmp_path)))
    assert code not in (0, None)
    expected = f"error: cannot reach MongoDB at {uri.replace('s3cret', '***')} (is scripts/run running?)"
    assert out.splitlines() == [expected], out


async def test_a_stale_env_file_is_ignored(tmp_path):
    """A file left by a stack that was killed names a pid that is gone: its addresses are dead too."""
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    write_env_file(tmp_path, {"ENVIRONMENT": "test", "MONGO_URI": f"'{os.environ['MONGO_URI']}'"}, pid=dead.pid)
    code, out = await cli("ledger-check", env=without_stack_vars(PEERTEST_RUN_DIR=str(tmp_path)))
    assert code != 0
    assert f"ignoring {tmp_path / 'env'}: the stack that wrote it (pid {dead.pid}) is not running" in out, out
    # Without the file's ENVIRONMENT the app's default, production, refuses the dev secrets: one line too.
    assert "error: invalid settings: refusing to start in production" in out and "Traceback" not in out, out


def test_env_file_format(tmp_path):
    path = write_env_file(tmp_path, {"A": "plain", "B": "'two words'", "export C": "x=y", "EMPTY": ""})
    path.write_text(path.read_text() + "# a comment\n\nnot a setting\n")
    environ = {"A": "mine"}
    loaded = load_run_env(path, environ)
    assert loaded == {"B": "two words", "C": "x=y", "EMPTY": ""}
    assert environ == {"A": "mine", "B": "two words", "C": "x=y", "EMPTY": ""}
    assert load_run_env(tmp_path / "absent", {}) == {}

    write_env_file(tmp_path, {"ENVIRONMENT": "dev", "MONGO_URI": "mongodb://dev"})
    assert load_run_env(path, {"ENVIRONMENT": "test"}) == {}  # another environment's stack
    assert load_run_env(path, {"ENVIRONMENT": "dev"}) == {"MONGO_URI": "mongodb://dev"}


def test_a_dev_env_file_is_not_mixed_into_a_production_shell(tmp_path):
    """A running dev stack's env file must not fill in what an operator's production shell lacks
    (ENVIRONMENT unset, because the app's own default is production)."""
    path = write_env_file(tmp_path, {
        "ENVIRONMENT": "dev", "MONGO_URI": "mongodb://127.0.0.1:27018/?directConnection=true", "MONGO_DB": "peertest",
        "REDIS_URL": "redis://127.0.0.1:6390/0", "STRIPE_API_BASE": "http://127.0.0.1:8420",
        "STRIPE_SIMULATE_CONNECT": "true", "MAIL_BACKEND": "outbox"})
    shell = {"MONGO_URI": "mongodb://db.prod.example:27017/?replicaSet=rs0", "JWT_SECRET": "j" * 48,
             "STRIPE_SECRET_KEY": "sk_live_x"}
    assert load_run_env(path, shell) == {}
