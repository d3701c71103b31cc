from beanie import PydanticObjectId

from app.escrow import service as escrow
from tests.fixtures.factories import fund_wallet, new_id


async def test_holds_are_listed_by_role_newest_first_with_cursor(client, actors):
    builder = await actors.signed_in("builder")
    tester = await actors.signed_in("tester")
    stranger = await actors.signed_in("tester")
    admin = await actors.admin()
    builder_id, tester_id = PydanticObjectId(builder["id"]), PydanticObjectId(tester["id"])
    await fund_wallet(builder_id, 10_000)
    made = [await escrow.hold_now(builder_id, tester_id, 100 * (i + 1), key=f"list:{i}") for i in range(5)]
    await escrow.hold_now(builder_id, new_id(), 50, key="list:other-tester")
    await escrow.release_now(made[0].id)

    first = (await client.get("/api/escrow/transactions?limit=3", headers=builder["headers"])).json()
    second = (await client.get(f"/api/escrow/transactions?limit=3&cursor={first['next']}",
                               headers=builder["headers"])).json()
    ids = [h["id"] for h in first["items"] + second["items"]]
    assert len(ids) == 6 and len(set(ids)) == 6 and second["next"] is None
    assert ids[-1] == str(made[0].id)  # oldest last
    assert first["items"][0]["total_cents"] == 55

    mine = (await client.get("/api/escrow/transactions", headers=tester["headers"])).json()["items"]
    assert len(mine) == 5 and all(h["tester_id"] == tester["id"] for h in mine)
    released = (await client.get("/api/escrow/transactions?status=released", headers=tester["headers"])).json()
    assert [h["id"] for h in released["items"]] == [str(made[0].id)]
    assert (await client.get("/api/escrow/transactions", headers=stranger["headers"])).json()["items"] == []
    assert len((await client.get("/api/escrow/transactions", headers=admin["headers"])).json()["items"]) == 6

    bad = await client.get("/api/escrow/transactions?cursor=nonsense", headers=builder["headers"])
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_cursor"
    too_big = await client.get("/api/escrow/transactions?limit=101", headers=builder["headers"])
    assert too_big.status_code == 422
    assert (await client.get("/api/escrow/transactions")).status_code == 401
