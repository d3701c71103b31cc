"""Idempotency-Key semantics, shown on a 💰 route (deposits)."""

import asyncio
from datetime import timedelta

from app import faults
from app.kit.idempotency import IdempotencyRecord
from app.kit.timeutil import utcnow
from app.wallet.models import Deposit


def keyed(user: dict, key: str) -> dict:
    return {**user["headers"], "Idempotency-Key": key}


async def test_key_in_flight_gets_409_until_its_lease_ends_then_resumes(client, actors):
    builder = await actors.signed_in("builder")
    other = await actors.signed_in("builder")
    first = await client.post("/api/wallet/deposits", json={"amount_cents": 1_000}, headers=keyed(builder, "k-2"))
    record = IdempotencyRecord.find_one(IdempotencyRecord.id == f"{builder['id']}:POST /api/wallet/deposits:k-2")
    # As a process that crashed mid-request leaves it: running, with a lease.
    await record.update({"$set": {"status": "in_flight", "locked_until": utcnow() + timedelta(seconds=30)}})
    in_flight = await client.post("/api/wallet/deposits", json={"amount_cents": 1_000}, headers=keyed(builder, "k-2"))
    assert first.status_code == 201
    assert in_flight.status_code == 409 and in_flight.json()["error"] == "idempotency_key_in_flight"
    assert 25 <= int(in_flight.headers["Retry-After"]) <= 30

    await record.update({"$set": {"locked_until": utcnow() - timedelta(seconds=1)}})  # the lease ran out
    resumed = await client.post("/api/wallet/deposits", json={"amount_cents": 1_000}, headers=keyed(builder, "k-2"))
    assert resumed.status_code == 201 and resumed.json()["deposit_id"] == first.json()["deposit_id"]
    assert (await record).attempts == 2 and await Deposit.count() == 1

    theirs = await client.post("/api/wallet/deposits", json={"amount_cents": 1_000}, headers=keyed(other, "k-2"))
    assert theirs.status_code == 201 and theirs.json()["deposit_id"] != first.json()["deposit_id"]


async def test_concurrent_retries_with_one_key_make_one_deposit(client, actors):
    builder = await actors.signed_in("builder")
    results = await asyncio.gather(*[
        client.post("/api/wallet/deposits", json={"amount_cents": 700}, headers=keyed(builder, "same"))
        for _ in range(5)
    ])
    assert {r.status_code for r in results} <= {201, 409}
    created = {r.json()["deposit_id"] for r in results if r.status_code == 201}
    assert len(created) == 1 and await Deposit.count() == 1


async def test_error_responses_are_replayed_and_bodies_compared(client, actors, settings):
    builder = await actors.signed_in("builder")
    settings.daily_deposit_limit_cents = 1_000
    over = await client.post("/api/wallet/deposits", json={"amount_cents": 5_000}, headers=keyed(builder, "e-1"))
    settings.daily_deposit_limit_cents = 100_000
    replay = await client.post("/api/wallet/deposits", json={"amount_cents": 5_000}, headers=keyed(builder, "e-1"))
    assert over.status_code == replay.status_code == 409
    assert replay.json() == over.json() and replay.headers["Idempotent-Replayed"] == "true"
    changed = await client.post("/api/wallet/deposits", json={"amount_cents": 600}, headers=keyed(builder, "e-1"))
    assert changed.status_code == 422 and changed.json()["error"] == "idempotency_key_reused"
    assert await Deposit.count() == 0


async def test_records_expire_through_a_ttl_index():
    info = await IdempotencyRecord.get_pymongo_collection().index_information()
    assert any(spec.get("expireAfterSeconds") == 0 and spec["key"] == [("expires_at", 1)] for spec in info.values())


async def test_a_5xx_after_the_first_commit_keeps_the_key_and_a_retry_resumes(client, actors):
    """The deposit committed, then the provider call crashed the request: the retry finishes that
    same deposit instead of opening a second one."""
    builder = await actors.signed_in("builder")
    from app.integrations import payments

    async def crash(*_, **__):
        raise faults.InjectedFault("the process dies here")

    real, payments.create_payment_intent = payments.create_payment_intent, crash
    try:
        crashed = await client.post("/api/wallet/deposits", json={"amount_cents": 900}, headers=keyed(builder, "r-1"))
    finally:
        payments.create_payment_intent = real
    assert crashed.status_code == 500 and crashed.json()["error"] == "internal_error"
    record = await IdempotencyRecord.find_one(IdempotencyRecord.id == f"{builder['id']}:POST /api/wallet/deposits:r-1")
    assert (record.status, record.recovery_point, record.locked_until) == ("in_flight", "deposit_opened", None)

    retried = await client.post("/api/wallet/deposits", json={"amount_cents": 900}, headers=keyed(builder, "r-1"))
    assert retried.status_code == 201 and retried.json()["client_secret"]
    assert retried.json()["deposit_id"] == str(record.operation_id)
    assert await Deposit.count() == 1
    wallet = (await client.get("/api/wallet", headers=builder["headers"])).json()
    assert wallet["deposited_today_cents"] == 900  # one quota reservation, not two
