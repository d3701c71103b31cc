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
    assert misplaced.status_code == 422 and misplaced.json()["error"] == "field_not_for_role"
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


async def test_null_in_any_profile_field_is_an_answer_never_a_500(client, actors):
    """The fuzzer's 500: {"skills": null} failed the document's validation inside the transaction."""
    from app.users.schemas import UserUpdate

    for role in ("builder", "tester"):
        user = await actors.signed_in(role)
        for field in UserUpdate.model_fields:
            resp = await client.patch("/api/users/me", json={field: None}, headers=user["headers"])
            assert resp.status_code in (200, 422), (role, field, resp.status_code, resp.text)


async def test_null_skills_clear_them_and_null_display_name_is_refused(client, actors):
    tester = await actors.signed_in("tester")
    h = tester["headers"]
    skilled = await client.patch("/api/users/me", json={"skills": ["qa", "ios"]}, headers=h)
    assert skilled.json()["skills"] == ["qa", "ios"]
    cleared = await client.patch("/api/users/me", json={"skills": None, "bio": None}, headers=h)
    assert cleared.status_code == 200 and cleared.json()["skills"] == []
    assert (await User.find_one(User.email == tester["email"])).skills == []
    refused = await client.patch("/api/users/me", json={"display_name": None}, headers=h)
    assert refused.status_code == 422 and refused.json()["error"] == "validation_error"
    assert refused.json()["detail"][0]["loc"] == ["body", "display_name"]


async def test_display_name_is_one_line_of_visible_text(client, actors):
    tester = await actors.signed_in("tester")
    for hostile in ("Tess\nSubject: reset", "Tess\r\nBcc: x@evil.test", "Tess\u2028line", "Tess\x00", "\x1b[31mTess"):
        resp = await client.patch("/api/users/me", json={"display_name": hostile}, headers=tester["headers"])
        assert resp.status_code == 422 and resp.json()["error"] == "validation_error", hostile
    ok = await client.patch("/api/users/me", json={"display_name": "  Tess Tester  "}, headers=tester["headers"])
    assert ok.status_code == 200 and ok.json()["display_name"] == "Tess Tester"
