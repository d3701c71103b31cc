"""Cursor pagination over _id (newest first): {"items": [...], "next": cursor|null}."""

from typing import Any, Generic, TypeVar

from beanie import Document
from bson import ObjectId
from bson.errors import InvalidId
from fastapi import Query
from pydantic import BaseModel

from app.errors import Unprocessable

T = TypeVar("T")
D = TypeVar("D", bound=Document)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next: str | None = None


class PageParams:
    def __init__(
        self,
        limit: int = Query(20, ge=1, le=100, description="page size (max 100)"),
        cursor: str | None = Query(None, max_length=64, description="the `next` value of the previous page"),
    ):
        self.limit = limit
        self.cursor = cursor

    def cursor_filter(self) -> dict[str, Any]:
        if not self.cursor:
            return {}
        try:
            return {"_id": {"$lt": ObjectId(self.cursor)}}
        except InvalidId:
            raise Unprocessable("invalid cursor") from None


async def paginate(model: type[D], filters: dict[str, Any], page: PageParams, **find_kwargs: Any) -> tuple[list[D], str | None]:
    """One query: fetch limit+1 to know whether there is a next page."""
    query = {**filters, **page.cursor_filter()}
    docs = await model.find(query, **find_kwargs).sort([("_id", -1)]).limit(page.limit + 1).to_list()
    has_more = len(docs) > page.limit
    docs = docs[: page.limit]
    return docs, (str(docs[-1].id) if has_more and docs else None)
