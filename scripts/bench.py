"""scripts/bench: latency ratios and database commands per request, from one run.

Run through `scripts/bench` (it starts the embedded services). It starts the API with uvicorn
on a free port and drives it over HTTP; the machine is noisy, so read the ratios against the
bare /health endpoint of the same server and the database command counts, not the raw
milliseconds. Service-level money operations (hold, release, deposit webhook) are counted in
process with the same command listener. Results also go to .run/bench.json.
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PASSWORD = "bench-password-2026"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_env() -> dict[str, str]:
    # Generous limits: the bench measures cost, not the rate limiter.
    return {**os.environ, "EXPOSE_DB_COMMANDS": "true", "USER_RATE_PER_MINUTE": "1000000",
            "LOGIN_RATE_PER_MINUTE": "1000000", "EMAIL_RATE_PER_IP_PER_HOUR": "1000000",
            "MIN_PAYOUT_CENTS": "100", "MONGO_DB": "bench",
            "LOG_LEVEL": "WARNING"}


async def start_api(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env=bench_env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    async with httpx.AsyncClient() as http:
        for _ in range(100):
            try:
                if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                    return proc
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    proc.kill()
    raise SystemExit("the API did not start")


async def seed(http: httpx.AsyncClient) -> dict:
    """A builder with funds and history, a tester with earnings and a payout account."""
    from app.escrow import service as escrow
    from app.kit.security import hash_password
    from app.users.models import User
    from tests.fixtures.factories import fund_wallet

    users = {}
    for role in ("builder", "tester"):
        user = User(email=f"bench-{role}-{uuid.uuid4().hex[:6]}@example.com", password_hash=await hash_password(PASSWORD),
                    role=role, display_name=role, email_verified=True,
                    **({"stripe_account_id": "acct_sim_bench", "payouts_enabled": True} if role == "tester" else {}))
        await user.insert()
        tokens = (await http.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})).json()
        users[role] = {"doc": user, "headers": {"Authorization": f"Bearer {tokens['access_token']}"}}
    builder, tester = users["builder"]["doc"], users["tester"]["doc"]
    await fund_wallet(builder.id, 500_000)
    for i in range(30):
        hold = await escrow.hold_now(builder.id, tester.id, 1_000, key=f"bench:{uuid.uuid4().hex}")
        if i % 2 == 0:
            await escrow.release_now(hold.id)
    return users


async def measure(http: httpx.AsyncClient, method: str, path: str, n: int, **kwargs) -> dict:
    for _ in range(min(10, n)):  # warm-up
        await http.request(method, path, **_fresh(kwargs))
    times, commands, statuses = [], [], set()
    for _ in range(n):
        started = time.perf_counter()
        resp = await http.request(method, path, **_fresh(kwargs))
        times.append(time.perf_counter() - started)
        commands.append(int(resp.headers.get("x-db-commands", -1)))
        statuses.add(resp.status_code)
    times.sort()
    return {"median_ms": statistics.median(times) * 1000, "p95_ms": times[int(len(times) * 0.95) - 1] * 1000,
            "db_commands": max(commands), "statuses": sorted(statuses)}


def _fresh(kwargs: dict) -> dict:
    """A new Idempotency-Key per request where the endpoint takes one."""
    if "idempotent" not in kwargs:
        return kwargs
    rest = {k: v for k, v in kwargs.items() if k != "idempotent"}
    return {**rest, "headers": {**rest["headers"], "Idempotency-Key": uuid.uuid4().hex}}


async def throughput(http: httpx.AsyncClient, path: str, headers: dict, total: int, concurrency: int = 16) -> float:
    queue = asyncio.Queue()
    for _ in range(total):
        queue.put_nowait(None)

    async def worker():
        while not queue.empty():
            queue.get_nowait()
            await http.get(path, headers=headers)

    started = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return total / (time.perf_counter() - started)


async def service_commands(users: dict) -> dict[str, int]:
    """Database commands of the money operations that have no route of their own."""
    from app.db import db_commands
    from app.escrow import service as escrow
    from app.integrations import payments
    from beanie import PydanticObjectId

    from app.outbox import service as outbox
    from app.payments import inbox
    from app.wallet import deposits
    from tests.fixtures.factories import stripe_event, stripe_signature

    builder, tester = users["builder"]["doc"], users["tester"]["doc"]

    async def count(coro) -> tuple[int, object]:
        bucket: list[str] = []
        token = db_commands.set(bucket)
        try:
            result = await coro
        finally:
            db_commands.reset(token)
        return len(bucket), result

    hold_cmds, hold = await count(escrow.hold_now(builder.id, tester.id, 1_000, key=f"bench:{uuid.uuid4().hex}"))
    release_cmds, _ = await count(escrow.release_now(hold.id))
    deposit = await deposits.create_deposit(builder, 5_000, PydanticObjectId())
    intents = payments.client().v1.payment_intents
    await intents.update_async(deposit.payment_intent_id, params={"payment_method": "pm_card_visa"})
    await intents.confirm_async(deposit.payment_intent_id)
    body = stripe_event("payment_intent.succeeded", (await payments.retrieve_payment_intent(deposit.payment_intent_id)).to_dict())
    receive_cmds, record = await count(inbox.receive(body, stripe_signature(body)))
    webhook_cmds, _ = await count(outbox.execute(inbox.task_key(record.source, record.event_id)))
    return {"escrow hold": hold_cmds, "escrow release": release_cmds,
            "deposit webhook, API side (event + its task)": receive_cmds,
            "deposit webhook, worker side (claim, credit, finish)": webhook_cmds}


async def main(requests: int) -> None:
    from app import db
    from app.config import get_settings

    os.environ.update(bench_env())
    get_settings.cache_clear()
    await db.connect(get_settings())
    port = free_port()
    api = await start_api(port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            users = await seed(http)
            b, t = users["builder"]["headers"], users["tester"]["headers"]
            rows = {
                "GET /health (baseline)": await measure(http, "GET", "/health", requests),
                "GET /api/users/me": await measure(http, "GET", "/api/users/me", requests, headers=b),
                "GET /api/wallet": await measure(http, "GET", "/api/wallet", requests, headers=b),
                "GET /api/wallet/entries": await measure(http, "GET", "/api/wallet/entries", requests, headers=b),
                "GET /api/escrow/transactions": await measure(http, "GET", "/api/escrow/transactions", requests, headers=b),
                "GET /api/payouts/balance": await measure(http, "GET", "/api/payouts/balance", requests, headers=t),
                "POST /api/wallet/deposits": await measure(http, "POST", "/api/wallet/deposits", 30, headers=b,
                                                           json={"amount_cents": 500}, idempotent=True),
                "POST /api/payouts": await measure(http, "POST", "/api/payouts", 30, headers=t,
                                                   json={"amount_cents": 100}, idempotent=True),
                "POST /api/auth/login": await measure(http, "POST", "/api/auth/login", 20, json={
                    "email": users["builder"]["doc"].email, "password": PASSWORD}),
            }
            health_rps = await throughput(http, "/health", {}, requests * 2)
            me_rps = await throughput(http, "/api/users/me", b, requests * 2)
        services = await service_commands(users)
    finally:
        api.terminate()
        api.wait(10)
        await db.get_client().drop_database("bench")
        await db.disconnect()
    report(rows, services, health_rps, me_rps)


def report(rows: dict, services: dict, health_rps: float, me_rps: float) -> None:
    base = rows["GET /health (baseline)"]["median_ms"]
    table = Table(title="PeerTest Hub bench (one run; compare ratios, not milliseconds)")
    for column in ("endpoint", "median ms", "p95 ms", "x /health", "DB commands", "statuses"):
        table.add_column(column, justify="right" if column != "endpoint" else "left")
    for name, r in rows.items():
        table.add_row(name, f"{r['median_ms']:.2f}", f"{r['p95_ms']:.2f}", f"{r['median_ms'] / base:.1f}",
                      str(r["db_commands"]), ",".join(map(str, r["statuses"])))
    for name, cmds in services.items():
        table.add_row(f"service: {name}", "", "", "", str(cmds), "")
    console = Console(width=120)
    console.print(table)
    console.print(f"throughput, 16 concurrent: /health {health_rps:.0f} req/s, /api/users/me {me_rps:.0f} req/s "
                  f"(ratio {me_rps / health_rps:.2f})")
    out = ROOT / ".run" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"endpoints": rows, "services": services,
                               "throughput": {"health_rps": health_rps, "me_rps": me_rps}}, indent=2))
    console.print(f"written to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="sequential requests per GET endpoint")
    asyncio.run(main(parser.parse_args().requests))
