"""python -m app.cli, run as an operator would."""

import asyncio
import os
import sys
from pathlib import Path

from app.users.models import User

ROOT = Path(__file__).resolve().parents[1]


async def cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", *args, cwd=ROOT, env={**os.environ, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, output.decode()


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
