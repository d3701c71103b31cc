from typing import Annotated, Literal

from pydantic import EmailStr, StringConstraints

from app.kit.schemas import Output, SingleLine, StrictInput, Token

Password = Annotated[str, StringConstraints(min_length=1, max_length=128)]
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
    password: Password


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
