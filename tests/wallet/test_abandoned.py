"""Abandoned deposits: the periodic sweep enqueues one job per deposit left pending too long; the
job cancels it at the provider and frees its daily quota, or credits it when it was paid after all
and only the webhook went missing. Jobs re-read the state, so a paid deposit is never cancelled."""

from datetime import timedelta

from beanie import PydanticObjectId

from app.kit.queue import HIGH, get_queue, safe_job_id
from app.kit.timeutil import utcnow
from app.wallet import deposits
from app.wallet import tasks as wallet_tasks
from app.wallet.models import Deposit, WalletAllocation
from tests.fixtures.factories import drain_jobs
from tests.wallet.conftest import WalletDriver, intent, pay

ABANDON_AFTER = 600


async def opened(wallet: WalletDriver, cents: int, *, age_seconds: int = ABANDON_AFTER + 60) -> dict:
    """A deposit the builder opened `age_seconds` ago (its PaymentIntent exists at the provider)."""
    resp = await wallet.deposit(cents)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    await Deposit.get_pymongo_collection().update_one(
        {"_id": PydanticObjectId(body["deposit_id"])},
        {"$set": {"created_at": utcnow() - timedelta(seconds=age_seconds)}})
    return body


async def deposit(body: dict) -> Deposit:
    return await Deposit.get(PydanticObjectId(body["deposit_id"]))


def expiry_jobs() -> list[tuple[str, tuple]]:
    return [(job.id, tuple(job.args)) for job in get_queue(HIGH).jobs if job.func_name == wallet_tasks.EXPIRE_TASK]


def expiry_job(body: dict) -> tuple[str, tuple]:
    return safe_job_id(f"deposit-expire:{body['deposit_id']}"), (body["deposit_id"],)


async def test_an_unpaid_deposit_is_cancelled_at_the_provider_and_frees_its_quota(wallet, settings):
    settings.deposit_abandon_after_seconds = ABANDON_AFTER
    stale = await opened(wallet, 30_000, age_seconds=ABANDON_AFTER + 120)
    staler = await opened(wallet, 1_000, age_seconds=ABANDON_AFTER + 600)
    fresh = await opened(wallet, 4_000, age_seconds=30)  # still within its time to pay
    assert (await wallet.summary())["deposited_today_cents"] == 35_000

    assert await wallet_tasks.sweep_abandoned_deposits() == 2
    assert await wallet_tasks.sweep_abandoned_deposits() == 2  # a repeated tick: the same jobs, no more
    assert expiry_jobs() == [expiry_job(staler), expiry_job(stale)]  # one per deposit, oldest first
    await drain_jobs()

    for body in (stale, staler):
        assert (await intent(body["payment_intent_id"]))["status"] == "canceled"
        cancelled = await deposit(body)
        assert (cancelled.status, cancelled.failure_reason) == ("canceled", "abandoned: never paid")
        assert cancelled.failed_at is not None
    summary = await wallet.summary()
    assert (summary["deposited_today_cents"], summary["available_cents"]) == (4_000, 0)
    assert (await deposit(fresh)).status == "pending"
    assert (await intent(fresh["payment_intent_id"]))["status"] != "canceled"

    # The provider's own payment_intent.canceled event, arriving late, frees nothing twice.
    await wallet.event("payment_intent.canceled", stale["payment_intent_id"])
    assert (await wallet.summary())["deposited_today_cents"] == 4_000
    assert await wallet_tasks.sweep_abandoned_deposits() == 0 and expiry_jobs() == []

    # The freed quota is usable again.
    settings.daily_deposit_limit_cents = 34_000
    assert (await wallet.deposit(30_000)).status_code == 201


async def test_a_paid_deposit_whose_webhook_never_came_is_credited_not_cancelled(wallet, settings):
    settings.deposit_abandon_after_seconds = ABANDON_AFTER
    paid = await opened(wallet, 2_500)
    await pay(paid["payment_intent_id"])  # the customer paid; the provider's webhook is lost

    assert await wallet_tasks.sweep_abandoned_deposits() == 1
    await drain_jobs()

    assert (await intent(paid["payment_intent_id"]))["status"] == "succeeded"
    credited = await deposit(paid)
    assert credited.status == "succeeded" and credited.succeeded_at is not None
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["deposited_today_cents"]) == (2_500, 2_500)
    [lot] = await WalletAllocation.find_all().to_list()
    assert (lot.deposit_id, lot.remaining_cents) == (credited.id, 2_500)
    assert await wallet_tasks.sweep_abandoned_deposits() == 0

    # When the webhook does arrive after all, the money is not counted twice.
    await wallet.event("payment_intent.succeeded", paid["payment_intent_id"])
    assert (await wallet.summary())["available_cents"] == 2_500
    assert await WalletAllocation.count() == 1


async def test_a_succeeded_deposit_is_skipped_even_when_its_job_was_already_queued(wallet, settings):
    settings.deposit_abandon_after_seconds = ABANDON_AFTER
    funded = await wallet.funded(1_000)
    await Deposit.get_pymongo_collection().update_one(
        {"_id": PydanticObjectId(funded["deposit_id"])}, {"$set": {"created_at": utcnow() - timedelta(days=1)}})
    assert await wallet_tasks.sweep_abandoned_deposits() == 0
    assert await wallet_tasks.expire_abandoned_deposit(funded["deposit_id"]) == "skipped"

    # Swept while unpaid, then paid and confirmed before its job ran: the job finds nothing to do.
    late = await opened(wallet, 1_500)
    assert await wallet_tasks.sweep_abandoned_deposits() == 1
    await pay(late["payment_intent_id"])
    await deposits.apply_intent(await intent(late["payment_intent_id"]))  # what the webhook handler does
    await drain_jobs()

    assert (await intent(late["payment_intent_id"]))["status"] == "succeeded"
    assert (await deposit(late)).status == "succeeded"
    assert await wallet_tasks.expire_abandoned_deposit(late["deposit_id"]) == "skipped"
    summary = await wallet.summary()
    assert (summary["available_cents"], summary["deposited_today_cents"]) == (2_500, 2_500)
    assert await wallet_tasks.sweep_abandoned_deposits() == 0
