from datetime import datetime
from typing import Annotated

from pydantic import Field, HttpUrl, StringConstraints

from app.kit.schemas import Output, StrictInput
from app.users.models import Membership, Qualification, RatingSummary, User

Skill = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]


class UserUpdate(StrictInput):
    """Profile fields only: role, email, balances and scores are not editable here."""

    display_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)] | None = None
    bio: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] | None = None
    company: Annotated[str, StringConstraints(strip_whitespace=True, max_length=120)] | None = None
    website: HttpUrl | None = None
    timezone: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    skills: list[Skill] | None = Field(default=None, max_length=30)
    weekly_budget_cap_cents: int | None = Field(default=None, ge=0, le=10_000_000_00)
    monthly_budget_cap_cents: int | None = Field(default=None, ge=0, le=10_000_000_00)


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
        other_roles = {"builder": _TESTER_FIELDS, "tester": _BUILDER_FIELDS}.get(user.role, _BUILDER_FIELDS | _TESTER_FIELDS)
        return cls.model_validate(me.model_dump(exclude=other_roles, exclude_unset=True))


_BUILDER_FIELDS = {"membership", "weekly_budget_cap_cents", "monthly_budget_cap_cents"}
_TESTER_FIELDS = {"qualification", "payouts_enabled"}
