"""The daily deposit limit. One quota document per builder and UTC day holds the cents of that
day's pending and succeeded deposits. The guarded $inc runs in the deposit's transaction, so two
concurrent deposits cannot both pass the limit."""

from datetime import UTC, datetime, timedelta
from typing import Any

from beanie import PydanticObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from app.config import get_settings
from app.errors import DailyLimitExceeded
from app.kit.timeutil import utcnow
from app.wallet.models import DepositQuota


def today() -> str:
    return utcnow().date().isoformat()


def quota_id(builder_id: Any, day: str) -> str:
    return f"{builder_id}:{day}"


def _expiry(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=2)  # a past day is only history


async def reserve(session: AsyncClientSession, builder_id: PydanticObjectId, day: str, cents: int) -> None:
    """Count `cents` against the day's limit, or raise DailyLimitExceeded."""
    limit = get_settings().daily_deposit_limit_cents
    coll = DepositQuota.get_pymongo_collection()
    guarded = await coll.update_one(
        {"_id": quota_id(builder_id, day), "reserved_cents": {"$lte": limit - cents}},
        {"$inc": {"reserved_cents": cents}}, session=session,
    )
    if guarded.matched_count:
        return
    current = await coll.find_one({"_id": quota_id(builder_id, day)}, session=session)
    if current is not None or cents > limit:
        used = current["reserved_cents"] if current else 0
        raise DailyLimitExceeded({"daily_limit_cents": limit, "deposited_today_cents": used, "requested_cents": cents})
    quota = DepositQuota(id=quota_id(builder_id, day), builder_id=builder_id, day=day, reserved_cents=cents,
                         expires_at=_expiry(day))
    await quota.insert(session=session)


async def adjust(session: AsyncClientSession, builder_id: PydanticObjectId, day: str, cents: int) -> None:
    """Unguarded: releasing a closed deposit, or re-counting one whose money arrived after all."""
    await DepositQuota.get_pymongo_collection().update_one(
        {"_id": quota_id(builder_id, day)},
        {"$inc": {"reserved_cents": cents},
         "$setOnInsert": {"builder_id": builder_id, "day": day, "expires_at": _expiry(day)}},
        upsert=True, session=session,
    )


async def used_today(builder_id: PydanticObjectId) -> int:
    quota = await DepositQuota.get(quota_id(builder_id, today()))
    return quota.reserved_cents if quota else 0
