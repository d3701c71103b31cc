"""The wallet's HTTP surface: roles, strict input, Idempotency-Key, entries and pagination."""

import pytest
from beanie import PydanticObjectId

from app.escrow import service as escrow
from app.integrations import payments
from app.ledger import service as ledger
from app.wallet.models import Deposit, WalletRefund
from tests.fixtures.factories import new_id

WALLET_ROUTES = [("GET", "/api/wallet"), ("POST", "/api/wallet/deposits"), ("GET", "/api/wallet/deposits"),
                 ("POST", "/api/wallet/refunds"), ("GET", "/api/wallet/refunds"), ("GET", "/api/wallet/entries")]


async def test_only_builders_use_the_wallet(client, actors):
    tester, admin = await actors.signed_in("tester"), await actors.admin()
    for method, path in WALLET_ROUTES:
        body = {"amount_cents": 1_000} if method == "POST" else None
        for caller in (tester, admin):
            resp = await client.request(method, path, json=body, headers=caller["headers"])
            assert resp.status_code == 403 and resp.json()["error"] == "wrong_role", (method, path)
        assert (await client.request(method, path, json=body)).status_code == 401
    assert await Deposit.count() == 0


@pytest.mark.parametrize("body", [
    {"amount_cents": 5000.0}, {"amount_cents": 50.5}, {"amount_cents": "5000"}, {"amount_cents": True},
    {"amount_cents": -5000}, {"amount_cents": 0}, {"amount_cents": 10**30}, {"amount_cents": 499},
    {"amount_cents": 100_001}, {"amount_cents": 5000, "currency": "eur"}, {"amount_cents": {"$gt": 0}}, {},
])
async def test_deposit_input_is_strict(wallet, settings, body):
    settings.min_deposit_cents, settings.max_deposit_cents = 500, 100_000
    resp = await wallet.client.post("/api/wallet/deposits", json=body, headers=wallet.headers)
    assert resp.status_code == 422, resp.text
    assert await Deposit.count() == 0


@pytest.mark.parametrize("body", [
    {"amount_cents": 1000.0}, {"amount_cents": "1000"}, {"amount_cents": -1}, {"amount_cents": 0},
    {"amount_cents": 10**30}, {"amount_cents": 100_000 * 90 + 1}, {"amount_cents": 1000, "lot": "x"},
])
async def test_refund_input_is_strict(wallet, settings, body):
    settings.daily_deposit_limit_cents, settings.refund_window_days = 100_000, 90
    resp = await wallet.client.post("/api/wallet/refunds", json=body, headers=wallet.headers)
    assert resp.status_code == 422, resp.text
    assert await WalletRefund.count() == 0


async def test_deposit_idempotency_key_replays_the_first_answer(wallet):
    first = await wallet.deposit(5_000, key="deposit-key-1")
    again = await wallet.deposit(5_000, key="deposit-key-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert await Deposit.count() == 1
    other = await wallet.deposit(6_000, key="deposit-key-1")
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    assert await Deposit.count() == 1
    assert (await wallet.deposit(5_000, key="deposit-key-2")).json()["deposit_id"] != first.json()["deposit_id"]


async def test_refund_idempotency_key_replays_the_first_answer(wallet):
    deposit = await wallet.funded(5_000)
    first = await wallet.refund(1_000, key="refund-key-1")
    again = await wallet.refund(1_000, key="refund-key-1")
    assert first.status_code == again.status_code == 201 and again.json() == first.json()
    assert len(await payments.list_refunds(deposit["payment_intent_id"])) == 1
    assert await WalletRefund.count() == 1
    assert (await wallet.refund(2_000, key="refund-key-1")).status_code == 422
    assert (await wallet.summary())["available_cents"] == 4_000
    # a refused request is replayed as refused, even once funds would allow it
    refused = await wallet.refund(9_000, key="refund-key-2")
    assert refused.status_code == 409
    assert (await wallet.refund(9_000, key="refund-key-2")).json() == refused.json()
    assert (await ledger.check_invariants())["ok"]


async def test_entries_list_the_callers_journals_newest_first(wallet, make_wallet, settings):
    settings.platform_fee_bps = 1000
    deposit = await wallet.funded(5_000)
    await wallet.refund(1_000)
    await escrow.hold_now(PydanticObjectId(wallet.builder["id"]), new_id(), 1_000, key="assignment:e")
    stranger = await make_wallet()
    await stranger.funded(700)

    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await wallet.client.get("/api/wallet/entries", params=params, headers=wallet.headers)).json()
        seen += page["items"]
        if not (cursor := page["next"]):
            break
    me = wallet.builder["id"]
    assert [(e["type"], e["available_delta_cents"]) for e in seen] == [
        ("escrow.hold", -1_100), ("wallet.refund_settled", 0), ("wallet.refund", -1_000), ("wallet.deposit", 5_000),
    ]
    assert seen[0]["lines"] == [{"account": f"builder:{me}:available", "amount_cents": -1_100},
                                {"account": f"builder:{me}:held", "amount_cents": 1_100}]
    assert seen[1]["lines"] == [{"account": f"builder:{me}:refund_pending", "amount_cents": -1_000}]
    assert seen[-1]["refs"]["deposit_id"] == deposit["deposit_id"] and seen[-1]["id"] and seen[-1]["created_at"]
    assert (await wallet.summary())["available_cents"] == 2_900


async def test_deposits_of_others_are_not_found(wallet, make_wallet):
    mine = (await wallet.deposit(1_000)).json()
    other = await make_wallet()
    assert (await other.client.get(f"/api/wallet/deposits/{mine['deposit_id']}",
                                   headers=other.headers)).status_code == 404
    assert (await other.client.get("/api/wallet/deposits/not-an-id", headers=other.headers)).status_code == 404
    assert (await other.client.get("/api/wallet/deposits", headers=other.headers)).json() == {"items": [],
                                                                                              "next": None}
