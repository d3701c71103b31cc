"""The chaos test's tools: the private stack (tests/fixtures/private_stack.py) on its own
database, an HTTP client that records every answer, the faults (Redis refusing writes, Stripe
redelivering late and in bursts, a SIGKILLed worker) and read-only views of the chaos stack's
MongoDB and localstripe.

Nothing here touches the suite's own services: the private stack gets its own run directory,
ports, database, Redis, S3 and localstripe.
"""

from __future__ import annotations

import asyncio
import email
import hashlib
import hmac
import json
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import stripe
from redis.exceptions import OutOfMemoryError, RedisError

from tests.fixtures.private_stack import PYTHON, ROOT, PrivateStack

STRIPE_KEY = "sk_test_local"
WEBHOOK_SECRET = "whsec_local_dev"
PASSWORD = "correct-horse-42"
DB_NAME = "chaos"


# -- processes ---------------------------------------------------------------------------------------
async def wait_for(check: Callable[[], Any], timeout: float, step: float = 0.2) -> Any:
    """The async wait_until: check()'s first truthy result, or its last one after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not (got := check()) and time.monotonic() <= deadline:
        await asyncio.sleep(step)
    return got


class ChaosStack(PrivateStack):
    """The private stack on database DB_NAME, with an admin and the verification mails at hand."""

    def __init__(self, tmp_path: Path, settings: dict[str, str]):
        super().__init__(tmp_path, {"MONGO_DB": DB_NAME, **settings})

    def create_admin(self, address: str) -> None:
        env = {**self.env, "MONGO_URI": self.mongo_uri, "MONGO_DB": DB_NAME}
        got = subprocess.run([PYTHON, "-m", "app.cli", "create-admin", address, PASSWORD], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
        if got.returncode != 0:
            raise AssertionError(f"create-admin failed: {got.stdout}\n{got.stderr}")

    def mail_token(self, address: str) -> str | None:
        """The verification token of the newest mail to `address` in the stack's outbox."""
        token = None
        for path in sorted(self.mail_dir.glob("*.eml"), key=lambda p: p.stat().st_mtime):
            message = email.message_from_bytes(path.read_bytes())
            if message["To"] != address:
                continue
            body = message.get_payload(decode=True).decode(errors="replace")
            if found := re.search(r"^Token: (\S+)$", body, re.MULTILINE):
                token = found.group(1)
        return token


# -- the HTTP side -------------------------------------------------------------------------------------
@dataclass
class Recorder:
    """Every answer the chaos clients got, by route and status; every 500 with its request id."""

    statuses: Counter = field(default_factory=Counter)  # (label, status) -> n
    transport_errors: Counter = field(default_factory=Counter)  # (label, exception name) -> n
    server_errors: list[str] = field(default_factory=list)  # each 500

    def saw(self, label: str, resp: httpx.Response) -> None:
        self.statuses[(label, resp.status_code)] += 1
        if resp.status_code == 500:
            self.server_errors.append(f"{label} -> 500 request_id={resp.headers.get('x-request-id')} "
                                      f"body={resp.text[:300]}")

    def by_status(self) -> dict[int, int]:
        totals: Counter = Counter()
        for (_, status), n in self.statuses.items():
            totals[status] += n
        return dict(sorted(totals.items()))

    def table(self) -> str:
        rows = [f"    {label:<34} {status}: {n}" for (label, status), n in sorted(self.statuses.items())]
        rows += [f"    {label:<34} {name}: {n}" for (label, name), n in sorted(self.transport_errors.items())]
        return "\n".join(rows)


class Api:
    def __init__(self, base_url: str, recorder: Recorder):
        self.recorder = recorder
        self.http = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30.0, connect=5.0),
                                      limits=httpx.Limits(max_connections=64, max_keepalive_connections=32))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, label: str | None = None, **kwargs: Any) -> httpx.Response:
        label = label or f"{method} {path}"
        try:
            resp = await self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            self.recorder.transport_errors[(label, type(exc).__name__)] += 1
            raise
        self.recorder.saw(label, resp)
        return resp

    async def answered(self, method: str, path: str, deadline: float, **kwargs: Any) -> httpx.Response | None:
        """Retry a read (or a harmless POST) through 5xx and connection errors until the deadline."""
        while True:
            try:
                resp = await self.request(method, path, **kwargs)
                if resp.status_code < 500:
                    return resp
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.3)

    async def money_post(self, path: str, body: dict, headers: dict[str, str], key: str,
                         deadline: float) -> tuple[httpx.Response | None, int]:
        """POST with an Idempotency-Key, retried with the SAME key on a 5xx, a 409
        idempotency_key_in_flight or a connection error, until another answer or the deadline.
        Returns (final answer or None, attempts)."""
        attempts = 0
        while True:
            attempts += 1
            retry_after = 0.3
            try:
                resp = await self.request("POST", path, json=body, headers={**headers, "Idempotency-Key": key})
                in_flight = resp.status_code == 409 and error_code(resp) == "idempotency_key_in_flight"
                if resp.status_code < 500 and not in_flight:
                    return resp, attempts
                retry_after = min(2.0, float(resp.headers.get("retry-after") or 0.3))
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                return None, attempts
            await asyncio.sleep(max(0.2, retry_after))


def error_code(resp: httpx.Response) -> str | None:
    """The stable machine code of an error answer ({"error": code, ...}), if any."""
    try:
        body = resp.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


# -- the provider (localstripe) ----------------------------------------------------------------------
class Provider:
    """localstripe as a client sees it: Stripe.js paying, and read-only listings for the checks."""

    def __init__(self, base: str):
        self.sdk = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": base}, http_client=stripe.HTTPXClient())
        self.http = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {STRIPE_KEY}"}, timeout=30)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def pay(self, intent_id: str) -> dict:
        """What Stripe.js does with the client secret: attach a test card, then confirm."""
        intents = self.sdk.v1.payment_intents
        await intents.update_async(intent_id, params={"payment_method": "pm_card_visa"})
        return (await intents.confirm_async(intent_id)).to_dict()

    async def _list(self, path: str, **params: Any) -> list[dict]:
        items: list[dict] = []
        after = None
        while True:
            query = {**params, "limit": 100, **({"starting_after": after} if after else {})}
            resp = await self.http.get(path, params=query)
            resp.raise_for_status()
            page = resp.json()
            items += page["data"]
            if not page.get("has_more") or not page["data"]:
                return items
            after = page["data"][-1]["id"]

    async def events(self) -> list[dict]:
        return await self._list("/v1/events")

    async def refunds(self, intent_id: str) -> list[dict]:
        return await self._list("/v1/refunds", payment_intent=intent_id)

    async def payment_intent(self, intent_id: str) -> dict:
        resp = await self.http.get(f"/v1/payment_intents/{intent_id}")
        resp.raise_for_status()
        return resp.json()


def event_body(event: dict) -> bytes:
    """An event's body exactly as localstripe sends it (same id, same content)."""
    return json.dumps(event, indent=2, sort_keys=True).encode()


def stripe_signature(payload: bytes, secret: str = WEBHOOK_SECRET) -> str:
    """A Stripe-Signature header for payload, as Stripe computes it (signed now)."""
    ts = int(time.time())
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


async def redeliver(api: Api, event: dict, label: str = "POST webhook (redelivery)") -> int | None:
    """POST one real provider event to the API again, signed like Stripe; the status or None."""
    payload = event_body(event)
    headers = {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": stripe_signature(payload)}
    try:
        resp = await api.request("POST", "/api/webhooks/stripe", label=label, content=payload, headers=headers)
    except httpx.TransportError:
        return None
    return resp.status_code


# -- Redis refusing writes -----------------------------------------------------------------------------
class RedisWrites:
    """Turn write refusal on and off on the chaos Redis: maxmemory 1 with noeviction makes every
    write answer OOM while reads still work."""

    def __init__(self, port: int):
        self.client = aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=3, socket_connect_timeout=3)

    async def refuse(self) -> bool:
        """Start refusing; True once a probe write was really refused."""
        await self.client.config_set("maxmemory-policy", "noeviction")
        await self.client.config_set("maxmemory", 1)
        try:
            await self.client.set("chaos:probe", "1", ex=5)
        except OutOfMemoryError:
            return True
        return False

    async def accept(self) -> None:
        await self.client.config_set("maxmemory", 0)

    async def accept_now(self, attempts: int = 20) -> bool:
        """accept(), retried (used in finally blocks)."""
        for _ in range(attempts):
            try:
                await self.accept()
                return True
            except (RedisError, OSError):
                await asyncio.sleep(0.25)
        return False

    async def aclose(self) -> None:
        await self.client.aclose()
