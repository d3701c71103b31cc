"""Base schemas: strict input (no unknown fields, no operator injection) and plain output."""

from typing import Annotated, Any, Self

from bson import ObjectId
from pydantic import BaseModel, ConfigDict, StringConstraints

# Bounded string types: every input string has a ceiling.
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]
Token = Annotated[str, StringConstraints(strip_whitespace=True, min_length=16, max_length=512)]


class StrictInput(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=10_000)


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, obj: Any, **overrides: Any) -> Self:
        """Copy the fields this schema names from obj (a document); ObjectIds become strings."""
        data = {name: getattr(obj, name) for name in cls.model_fields if name not in overrides and hasattr(obj, name)}
        data.update(overrides)
        return cls.model_validate({k: str(v) if isinstance(v, ObjectId) else v for k, v in data.items()})


# One line of visible text: no control characters (newlines would let a name forge lines in an email)
# and no bidirectional overrides (which make text read differently from what it is).
SingleLine = Annotated[str, StringConstraints(
    strip_whitespace=True, min_length=1, max_length=80,
    pattern=r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+$")]
