"""What the payment domain shares: the builder's provider customer, and storing a provider id on
a user exactly once. Membership and Connect onboarding live in membership.py and connect.py."""

from typing import Any

from beanie import PydanticObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from app.db import run_in_transaction
from app.integrations import payments
from app.kit.timeutil import utcnow
from app.users.models import User


async def set_once(user_id: PydanticObjectId, field: str, value: str, extra: dict[str, Any] | None = None) -> str:
    """Store a provider id on the user once; when a concurrent request stored one first, use that."""

    async def store(session: AsyncClientSession) -> str:
        coll = User.get_pymongo_collection()
        result = await coll.update_one({"_id": user_id, field: None},
                                       {"$set": {field: value, "updated_at": utcnow(), **(extra or {})}},
                                       session=session)
        if result.matched_count:
            return value
        return (await coll.find_one({"_id": user_id}, {field: 1}, session=session))[field]

    return await run_in_transaction(store)


async def ensure_customer(user: User) -> str:
    """The builder's provider customer (deposits and membership), created once and kept on the user."""
    if not user.stripe_customer_id:
        customer = await payments.create_customer(user.email, str(user.id))
        user.stripe_customer_id = await set_once(user.id, "stripe_customer_id", customer.id)
    return user.stripe_customer_id
