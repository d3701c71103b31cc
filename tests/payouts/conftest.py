"""A tester with a connected payout account and earnings, driving payouts through the public API."""

import uuid

import pytest
from beanie import PydanticObjectId

from app.config import get_settings
from app.escrow import service as escrow
from app.kit.money import fee_for
from tests.fixtures.factories import fund_wallet, new_id


async def earn(tester_id: str, cents: int) -> None:
    """Earnings as an approved submission leaves them: a builder's escrow hold released to the tester."""
    builder = new_id()
    await fund_wallet(builder, cents + fee_for(cents, get_settings().platform_fee_bps))
    hold = await escrow.hold_now(builder, PydanticObjectId(tester_id), cents, key=f"test-earn:{uuid.uuid4().hex}")
    await escrow.release_now(hold.id)


class PayoutDriver:
    def __init__(self, client, tester: dict):
        self.client = client
        self.tester = tester
        self.headers = tester["headers"]

    async def onboard(self):
        resp = await self.client.post("/api/payments/connect/onboard", headers=self.headers)
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def request(self, cents, key: str | None = None, **extra):
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        return await self.client.post("/api/payouts", json={"amount_cents": cents, **extra}, headers=headers)

    async def balance(self) -> dict:
        resp = await self.client.get("/api/payouts/balance", headers=self.headers)
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def listed(self) -> list[dict]:
        resp = await self.client.get("/api/payouts", headers=self.headers)
        assert resp.status_code == 200, resp.text
        return resp.json()["items"]


@pytest.fixture
async def payee(client, actors, settings) -> PayoutDriver:
    """Connected through simulated Connect (the embedded default) and holding 5,000 cents of earnings."""
    settings.stripe_simulate_connect = True
    driver = PayoutDriver(client, await actors.signed_in("tester"))
    await driver.onboard()
    await earn(driver.tester["id"], 5_000)
    return driver
