from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, HttpUrl, StringConstraints, field_validator

from app.kit.schemas import Output, SingleLine, StrictInput
from app.users.models import Membership, Qualification, RatingSummary, User

Skill = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]


def _omittable(schema: dict[str, Any]) -> None:
    """A field that may be left out but not sent as null: its schema shows no `default: null`."""
    schema.pop("default", None)


class UserUpdate(StrictInput):
    """Profile fields only: role, email, balances and scores are not editable here. Send only the
    fields to change. `null` clears an optional field (`skills: null` is the same as `[]`, a budget
    cap of `null` means no cap); `display_name` cannot be cleared. Builder-only fields (company,
    budget caps) from a tester, or tester-only ones (skills) from a builder, get 422."""

    display_name: SingleLine = Field(default=None, json_schema_extra=_omittable,  # type: ignore[assignment]
                                     description="one line of visible text; cannot be null")
    bio: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] | None = None
    company: Annotated[str, StringConstraints(strip_whitespace=True, max_length=120)] | None = None
    website: HttpUrl | None = None
    timezone: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    skills: list[Skill] | None = Field(default=None, max_length=30, description="testers; `null` clears, as `[]`")
    weekly_budget_cap_cents: int | None = Field(default=None, ge=0, le=10_000_000_00)
    monthly_budget_cap_cents: int | None = Field(default=None, ge=0, le=10_000_000_00)

    @field_validator("skills")
    @classmethod
    def _null_clears(cls, value: list[str] | None) -> list[str]:
        return [] if value is None else value  # the document keeps a list, never null


class PublicUser(Output):
    id: str
    display_name: str
    role: str
    bio: str | None = None
    company: str | None = None
    rating: RatingSummary
    created_at: datetime


class Me(Output):
    id: str
    email: str
    role: str
    display_name: str
    email_verified: bool
    flagged: bool
    bio: str | None = None
    company: str | None = None
    website: str | None = None
    timezone: str | None = None
    skills: list[str] = []
    rating: RatingSummary
    created_at: datetime
    updated_at: datetime
    # builders
    membership: Membership | None = None
    weekly_budget_cap_cents: int | None = None
    monthly_budget_cap_cents: int | None = None
    # testers
    qualification: Qualification | None = None
    payouts_enabled: bool | None = None

    @classmethod
    def of(cls, user: User) -> "Me":
        """Role-specific fields are left unset for other roles (the route excludes unset fields)."""
        me = super().of(user)
        by_role = {"builder": _TESTER_FIELDS, "tester": _BUILDER_FIELDS}
        other_roles = by_role.get(user.role, _BUILDER_FIELDS | _TESTER_FIELDS)
        return cls.model_validate(me.model_dump(exclude=other_roles, exclude_unset=True))


_BUILDER_FIELDS = {"membership", "weekly_budget_cap_cents", "monthly_budget_cap_cents"}
_TESTER_FIELDS = {"qualification", "payouts_enabled"}
