"""Connect onboarding for tester payouts. The provider is the source of truth: the account.updated
handler re-retrieves the account and stores what it says now."""

import logging
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from app.config import get_settings
from app.db import run_in_transaction
from app.integrations import payments
from app.kit.timeutil import utcnow
from app.payments import inbox
from app.payments.service import set_once
from app.users.models import User

log = logging.getLogger(__name__)


async def onboarding_link(user: User) -> str:
    """Creates the Express account once (its idempotency key is the user id), then a fresh link."""
    account_id = user.stripe_account_id
    if account_id is None:
        account = await payments.create_connect_account(user.email, str(user.id))
        account_id = await set_once(user.id, "stripe_account_id", account.id,
                                    {"payouts_enabled": bool(account.payouts_enabled)})
    base = get_settings().frontend_base_url.rstrip("/")
    return await payments.create_account_link(account_id, f"{base}/payouts/connect/refresh",
                                              f"{base}/payouts/connect/return")


@inbox.handles("account.updated")
async def on_account_updated(event: dict[str, Any]) -> None:
    account_id = event["data"]["object"]["id"]
    if await User.find_one(User.stripe_account_id == account_id) is None:
        log.warning("account.updated for unknown account %s", account_id)
        return
    account = await payments.retrieve_account(account_id)

    async def store(session: AsyncClientSession) -> None:
        await User.get_pymongo_collection().update_one(
            {"stripe_account_id": account_id},
            {"$set": {"payouts_enabled": bool(account.payouts_enabled), "updated_at": utcnow()}}, session=session)

    await run_in_transaction(store)
