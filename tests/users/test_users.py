from app.users.models import User
from tests.fixtures.factories import bearer


async def test_me_and_patch(client, actors):
    builder = await actors.signed_in("builder")
    me = (await client.get("/api/users/me", headers=builder["headers"])).json()
    assert me["role"] == "builder" and me["membership"]["status"] == "none" and "qualification" not in me

    patched = await client.patch(
        "/api/users/me",
        json={"display_name": "Bob the Builder", "company": "Acme", "weekly_budget_cap_cents": 50000},
        headers=builder["headers"],
    )
    assert patched.status_code == 200
    assert patched.json()["display_name"] == "Bob the Builder" and patched.json()["weekly_budget_cap_cents"] == 50000


async def test_patch_refuses_protected_and_misplaced_fields(client, actors):
    tester = await actors.signed_in("tester")
    for body in ({"role": "admin"}, {"email": "x@example.com"}, {"rating": {"average": 5}}, {"email_verified": True}):
        resp = await client.patch("/api/users/me", json=body, headers=tester["headers"])
        assert resp.status_code == 422, body
    misplaced = await client.patch("/api/users/me", json={"weekly_budget_cap_cents": 10}, headers=tester["headers"])
    assert misplaced.status_code == 422 and misplaced.json()["error"] == "unprocessable"
    negative = await client.patch("/api/users/me", json={"skills": ["x" * 100]}, headers=tester["headers"])
    assert negative.status_code == 422
    user = await User.find_one(User.email == tester["email"])
    assert user.role == "tester"


async def test_public_profile(client, actors):
    tester = await actors.signed_in("tester")
    builder = await actors.signed_in("builder")
    resp = await client.get(f"/api/users/{tester['id']}", headers=builder["headers"])
    assert resp.status_code == 200
    assert set(resp.json()) == {"id", "display_name", "role", "bio", "company", "rating", "created_at"}
    assert (await client.get("/api/users/not-an-id", headers=builder["headers"])).status_code == 404
    assert (await client.get("/api/users/65a000000000000000000000", headers=builder["headers"])).status_code == 404
    assert (await client.get(f"/api/users/{tester['id']}")).status_code == 401


async def test_role_dependencies(app, client, actors):
    from fastapi import APIRouter

    from app.auth.dependencies import AdminUser, BuilderUser

    router = APIRouter()

    @router.get("/_probe/builder")
    async def builder_only(user: BuilderUser):
        return {"ok": user.role}

    @router.get("/_probe/admin")
    async def admin_only(user: AdminUser):
        return {"ok": user.role}

    app.include_router(router)
    try:
        tester = await actors.signed_in("tester")
        builder = await actors.signed_in("builder")
        admin = await actors.admin()
        assert (await client.get("/_probe/builder", headers=tester["headers"])).json()["error"] == "wrong_role"
        assert (await client.get("/_probe/builder", headers=builder["headers"])).status_code == 200
        assert (await client.get("/_probe/admin", headers=builder["headers"])).status_code == 403
        assert (await client.get("/_probe/admin", headers=bearer(admin["tokens"]["access_token"]))).status_code == 200
    finally:
        app.router.routes[:] = [r for r in app.router.routes if not getattr(r, "path", "").startswith("/_probe")]


async def test_ensure_owner():
    import pytest
    from beanie import PydanticObjectId

    from app.auth.dependencies import ensure_owner
    from app.errors import NotFound, NotOwner

    owner = User(email="o@x.io", password_hash="h", role="builder", display_name="O", id=PydanticObjectId())
    other = User(email="p@x.io", password_hash="h", role="builder", display_name="P", id=PydanticObjectId())
    admin = User(email="a@x.io", password_hash="h", role="admin", display_name="A", id=PydanticObjectId())
    ensure_owner(owner.id, owner)
    ensure_owner(owner.id, admin)
    with pytest.raises(NotOwner):
        ensure_owner(owner.id, other)
    with pytest.raises(NotFound):
        ensure_owner(owner.id, other, hide=True)
    with pytest.raises(NotOwner):
        ensure_owner(owner.id, admin, admin_ok=False)
