from beanie import PydanticObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from app.db import duplicate_key_as, run_in_transaction
from app.errors import EmailTaken, FieldNotForRole, NotFound, Unprocessable
from app.kit.passwords import check_strength
from app.kit.security import hash_password
from app.kit.timeutil import utcnow
from app.users.models import User
from app.users.schemas import UserUpdate

_BUILDER_ONLY = {"weekly_budget_cap_cents", "monthly_budget_cap_cents", "company"}
_TESTER_ONLY = {"skills"}


async def get_user(user_id: PydanticObjectId) -> User:
    """Public profiles: admins and disabled accounts are not listed to other users."""
    user = await User.get(user_id)
    if user is None or user.role == "admin" or not user.is_active:
        raise NotFound("user not found")
    return user


async def update_profile(user: User, changes: UserUpdate) -> User:
    fields = changes.model_dump(exclude_unset=True, mode="json")
    wrong = (_BUILDER_ONLY if user.role != "builder" else set()) | (_TESTER_ONLY if user.role != "tester" else set())
    if misplaced := sorted(set(fields) & wrong):
        raise FieldNotForRole(f"not a {user.role} field: {', '.join(misplaced)}")
    if "display_name" in fields and fields["display_name"] is None:
        raise Unprocessable("display_name cannot be empty")
    if not fields:
        return user

    async def apply(session: AsyncClientSession) -> User:
        fresh = await User.get(user.id, session=session)
        for name, value in fields.items():
            setattr(fresh, name, value)
        fresh.updated_at = utcnow()
        await fresh.save(session=session)
        return fresh

    return await run_in_transaction(apply)


async def create_admin(email: str, password: str, display_name: str) -> User:
    check_strength(password, email)
    admin = User(
        email=email.lower(),
        password_hash=await hash_password(password),
        role="admin",
        display_name=display_name,
        email_verified=True,
    )

    async def insert(session: AsyncClientSession) -> User:
        await admin.insert(session=session)
        return admin

    with duplicate_key_as(EmailTaken):
        return await run_in_transaction(insert)
