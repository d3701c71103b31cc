"""A builder driving the wallet through the public API, paying like Stripe.js would."""

import pytest
import stripe

from app.integrations import payments
from app.ledger import service as ledger
from tests.fixtures.factories import drain_jobs, post_stripe_event, stripe_event


async def pay(intent_id: str, payment_method: str = "pm_card_visa") -> dict:
    """What Stripe.js does with the client secret: attach a card, then confirm. Declines raise."""
    intents = payments.client().v1.payment_intents
    await intents.update_async(intent_id, params={"payment_method": payment_method})
    return (await intents.confirm_async(intent_id)).to_dict()


async def intent(intent_id: str) -> dict:
    return (await payments.retrieve_payment_intent(intent_id)).to_dict()


class WalletDriver:
    def __init__(self, client, builder: dict):
        self.client = client
        self.builder = builder
        self.headers = builder["headers"]

    async def deposit(self, cents, key: str | None = None, **extra):
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        return await self.client.post("/api/wallet/deposits", json={"amount_cents": cents, **extra}, headers=headers)

    async def event(self, event_type: str, intent_id: str, event_id: str | None = None, *, drain: bool = True):
        """Deliver a signed event carrying the PaymentIntent as the provider has it now."""
        resp = await post_stripe_event(self.client, stripe_event(event_type, await intent(intent_id), event_id))
        assert resp.status_code == 200, resp.text
        if drain:
            await drain_jobs()
        return resp

    async def funded(self, cents: int) -> dict:
        """A deposit paid with a test card and confirmed by the webhook: the returned deposit body."""
        resp = await self.deposit(cents)
        assert resp.status_code == 201, resp.text
        await pay(resp.json()["payment_intent_id"])
        await self.event("payment_intent.succeeded", resp.json()["payment_intent_id"])
        return resp.json()

    async def declined(self, cents: int) -> dict:
        resp = await self.deposit(cents)
        assert resp.status_code == 201, resp.text
        with pytest.raises(stripe.StripeError):
            await pay(resp.json()["payment_intent_id"], "pm_card_chargeCustomerFail")
        return resp.json()

    async def refund(self, cents, key: str | None = None, **extra):
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        return await self.client.post("/api/wallet/refunds", json={"amount_cents": cents, **extra}, headers=headers)

    async def summary(self) -> dict:
        resp = await self.client.get("/api/wallet", headers=self.headers)
        assert resp.status_code == 200, resp.text
        return resp.json()


@pytest.fixture(autouse=True)
async def ledger_stays_consistent():
    """Every wallet scenario ends with the ledger invariants intact."""
    yield
    report = await ledger.check_invariants()
    assert report["ok"], report["violations"]


@pytest.fixture
async def wallet(client, actors) -> WalletDriver:
    return WalletDriver(client, await actors.signed_in("builder"))


@pytest.fixture
def make_wallet(client, actors):
    async def make() -> WalletDriver:
        return WalletDriver(client, await actors.signed_in("builder"))

    return make
