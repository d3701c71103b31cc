from typing import Annotated, Any, Literal

from pydantic import EmailStr, Field, StringConstraints

from app.config import get_settings
from app.kit.schemas import Output, SingleLine, StrictInput, Token


def _password_rules(schema: dict[str, Any]) -> None:
    schema["minLength"] = get_settings().password_min_length  # read when the document is generated


# The document shows the rules for a new password; the check itself is the service's (422 `weak_password`
# listing the unmet requirements), so validation stays loose and login sees any stored password.
Password = Annotated[str, StringConstraints(min_length=1, max_length=128), Field(
    json_schema_extra=_password_rules,
    description="PASSWORD_MIN_LENGTH (default 10) to 128 characters, with letters and digits, at least 4 distinct "
                "characters, not a common password and not containing the email's local part")]
# Login takes whatever was stored, even a password older than today's rules.
StoredPassword = Annotated[str, StringConstraints(min_length=1, max_length=128)]
DisplayName = SingleLine


class RegisterIn(StrictInput):
    email: EmailStr
    password: Password
    role: Literal["builder", "tester"]
    display_name: DisplayName


class Registered(Output):
    id: str
    email: str
    role: str
    email_verified: bool


class LoginIn(StrictInput):
    email: EmailStr
    password: StoredPassword


class TokenPair(Output):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class TokenIn(StrictInput):
    token: Token


class RefreshIn(StrictInput):
    refresh_token: Token


class EmailIn(StrictInput):
    email: EmailStr


class PasswordResetConfirmIn(StrictInput):
    token: Token
    new_password: Password


class Message(Output):
    status: str
    detail: str | None = None
