"""Keyset pagination, newest first: {"items": [...], "next": cursor|null}.

Ordered by (created_at, _id) rather than _id alone: ObjectIds made by different processes (API
and workers) in the same second do not sort by creation time.
"""

from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from beanie import Document
from bson import ObjectId
from bson.errors import InvalidId
from fastapi import Query
from pydantic import BaseModel

from app.errors import InvalidCursor, raises
from app.kit.timeutil import as_utc

T = TypeVar("T")
D = TypeVar("D", bound=Document)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next: str | None = None


@raises(InvalidCursor)
class PageParams:
    def __init__(
        self,
        limit: int = Query(20, ge=1, le=100, description="page size (max 100)"),
        cursor: str | None = Query(None, max_length=256, description="the `next` value of the previous page"),
    ):
        self.limit = limit
        self.cursor = cursor

    def cursor_filter(self, string_ids: bool = False) -> dict[str, Any]:
        """The keyset condition after the cursor; `string_ids` for collections keyed by strings."""
        if not self.cursor:
            return {}
        try:
            millis, raw_id = self.cursor.split("_", 1)
            at = datetime.fromtimestamp(int(millis) / 1000, UTC)
            if not raw_id:
                raise ValueError("empty id")
            last_id: Any = raw_id if string_ids else ObjectId(raw_id)
        except (ValueError, InvalidId, OverflowError, OSError):
            raise InvalidCursor() from None
        return {"$or": [{"created_at": {"$lt": at}}, {"created_at": at, "_id": {"$lt": last_id}}]}


def cursor_of(doc: Document) -> str:
    millis = int(as_utc(doc.created_at).timestamp() * 1000)  # Mongo keeps milliseconds
    return f"{millis}_{doc.id}"


async def paginate(model: type[D], filters: dict[str, Any], page: PageParams) -> tuple[list[D], str | None]:
    """One query: fetch limit+1 to know whether there is a next page."""
    query = {**filters, **page.cursor_filter(string_ids=model.model_fields["id"].annotation is str)}
    docs = await model.find(query).sort([("created_at", -1), ("_id", -1)]).limit(page.limit + 1).to_list()
    has_more = len(docs) > page.limit
    docs = docs[: page.limit]
    return docs, (cursor_of(docs[-1]) if has_more and docs else None)
