"""The provider's webhook: signed, stored once, and convergent under duplicates, reordering and staleness."""

import random
import time

from beanie import PydanticObjectId

from app.integrations import payments
from app.kit.queue import queue_depths
from app.ledger import service as ledger
from app.outbox.models import OutboxTask
from app.payments.models import InboxEvent
from app.wallet.models import Deposit, WalletAllocation
from tests.fixtures.factories import drain_jobs, post_stripe_event, stripe_event, stripe_signature
from tests.wallet.conftest import intent, pay


async def three_deposit_events(wallet) -> list[bytes]:
    """One paid, one declined, one canceled deposit: the events the provider sends, in order.
    Amounts differ so outcomes can be compared across builders."""
    paid = (await wallet.deposit(5_000)).json()
    stale = await intent(paid["payment_intent_id"])  # taken before payment
    await pay(paid["payment_intent_id"])
    declined = await wallet.declined(2_000)
    canceled = (await wallet.deposit(1_000)).json()
    await payments.client().v1.payment_intents.cancel_async(canceled["payment_intent_id"])
    return [
        stripe_event("payment_intent.succeeded", await intent(paid["payment_intent_id"])),
        stripe_event("payment_intent.payment_failed", await intent(declined["payment_intent_id"])),
        stripe_event("payment_intent.canceled", await intent(canceled["payment_intent_id"])),
        # a stale snapshot under an event type that no longer applies: the handler re-reads the PI
        stripe_event("payment_intent.payment_failed", stale),
    ]


async def outcome(wallet) -> tuple:
    deposits = await Deposit.find(Deposit.builder_id == wallet_id(wallet)).to_list()
    lots = await WalletAllocation.find(WalletAllocation.builder_id == wallet_id(wallet)).to_list()
    return (await wallet.summary(), sorted((d.amount_cents, d.status) for d in deposits),
            sorted((lot.amount_cents, lot.remaining_cents) for lot in lots))


def wallet_id(wallet):
    return PydanticObjectId(wallet.builder["id"])


async def test_duplicated_and_shuffled_events_converge_on_one_ordered_delivery(make_wallet):
    ordered, shuffled = await make_wallet(), await make_wallet()
    for body in await three_deposit_events(ordered):
        assert (await post_stripe_event(ordered.client, body)).status_code == 200
        await drain_jobs()

    bodies = await three_deposit_events(shuffled)
    deliveries = bodies * 3  # each event id three times
    rng = random.Random(20261123)
    rng.shuffle(deliveries)
    for i, body in enumerate(deliveries):
        assert (await post_stripe_event(shuffled.client, body)).status_code == 200
        if rng.random() < 0.5 or i == len(deliveries) - 1:
            await drain_jobs()

    expected = await outcome(ordered)
    assert expected[0]["available_cents"] == 5_000 and expected[0]["deposited_today_cents"] == 5_000
    assert expected[1] == [(1_000, "canceled"), (2_000, "failed"), (5_000, "succeeded")]
    assert await outcome(shuffled) == expected
    assert await InboxEvent.count() == 8  # 4 distinct event ids per builder, stored once each

    # the same PaymentIntent state under fresh event ids (the provider resending) changes nothing
    for body in bodies:
        await post_stripe_event(shuffled.client, body.replace(b'"id": "evt_', b'"id": "evt_again_', 1))
    await drain_jobs()
    assert await outcome(shuffled) == expected
    assert (await ledger.check_invariants())["ok"]


async def test_bad_missing_or_stale_signatures_are_refused_and_change_nothing(wallet):
    body = (await wallet.deposit(5_000)).json()
    await pay(body["payment_intent_id"])
    payload = stripe_event("payment_intent.succeeded", await intent(body["payment_intent_id"]))
    attempts = {
        "wrong secret": stripe_signature(payload, secret="whsec_attacker"),
        "missing": "",
        "stale": stripe_signature(payload, timestamp=int(time.time()) - 3_600),
        "garbage": "t=1,v1=deadbeef",
        "other body": stripe_signature(payload.replace(b"5000", b"9000")),
    }
    for name, signature in attempts.items():
        resp = await post_stripe_event(wallet.client, payload, signature=signature)
        assert resp.status_code == 400, name
        assert resp.json()["error"] == "invalid_signature", name
    assert await InboxEvent.count() == 0 and sum(queue_depths().values()) == 0
    await drain_jobs()
    assert (await wallet.summary())["available_cents"] == 0
    assert (await Deposit.find_one()).status == "pending"


async def test_events_for_other_payment_intents_are_ignored(wallet):
    """A membership invoice's PaymentIntent is not a deposit: no credit, no failure."""
    foreign = await payments.client().v1.payment_intents.create_async(
        params={"amount": 2_900, "currency": "usd", "payment_method_types": ["card"]})
    await pay(foreign.id)
    await wallet.event("payment_intent.succeeded", foreign.id)
    assert [e.status for e in await InboxEvent.find_all().to_list()] == ["processed"]
    assert await WalletAllocation.count() == 0
    assert (await ledger.check_invariants())["ok"]


async def test_amount_mismatch_is_never_credited(wallet, monkeypatch):
    body = (await wallet.deposit(5_000)).json()
    await pay(body["payment_intent_id"])
    real = payments.retrieve_payment_intent

    async def tampered(intent_id):
        obj = await real(intent_id)
        obj["amount"] = 50_000
        return obj

    monkeypatch.setattr(payments, "retrieve_payment_intent", tampered)
    event = stripe_event("payment_intent.succeeded", await intent(body["payment_intent_id"]))
    resp = await post_stripe_event(wallet.client, event)
    assert resp.status_code == 200
    await drain_jobs()  # the task fails loudly: the outbox retries it, operators see it
    [event] = await InboxEvent.find_all().to_list()
    assert event.status == "failed" and "DepositMismatch" in event.error
    task = await OutboxTask.get(f"inbox:stripe:{event.event_id}")
    assert task.status == "pending" and "DepositMismatch" in task.last_error
    assert (await wallet.summary())["available_cents"] == 0
