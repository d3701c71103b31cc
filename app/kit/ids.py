from bson import ObjectId
from bson.errors import InvalidId

from app.errors import NotFound


def parse_object_id(value: str, what: str = "resource") -> ObjectId:
    """Path ids that are not ObjectIds cannot exist: answer 404, not 500."""
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise NotFound(f"{what} not found") from None
