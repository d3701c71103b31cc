from fastapi import APIRouter, Request, Response, status

from app.auth import service
from app.auth.schemas import (
    EmailIn,
    LoginIn,
    Message,
    PasswordResetConfirmIn,
    RefreshIn,
    Registered,
    RegisterIn,
    TokenIn,
    TokenPair,
)
from app.errors import (
    AccountDisabled,
    EmailNotVerified,
    EmailTaken,
    InvalidCredentials,
    InvalidOneTimeToken,
    InvalidToken,
    LoginThrottled,
    RateLimited,
    RefreshTokenReused,
    WeakPassword,
)
from app.kit.http import client_ip
from app.ops.openapi import errors

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=Registered,
    responses=errors(EmailTaken, WeakPassword, RateLimited),
)
async def register(body: RegisterIn, request: Request) -> Registered:
    user = await service.register(body, client_ip(request))
    return Registered(
        id=str(user.id),
        email=user.email,
        role=user.role,
        email_verified=user.email_verified,
    )


@router.post("/verify-email", response_model=Message, responses=errors(InvalidOneTimeToken))
async def verify_email(body: TokenIn) -> Message:
    await service.verify_email(body.token)
    return Message(status="verified")


@router.post(
    "/verify-email/resend",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Message,
    responses=errors(RateLimited),
)
async def resend_verification(body: EmailIn, request: Request) -> Message:
    await service.resend_verification(body.email, client_ip(request))
    return Message(
        status="accepted",
        detail="If the account exists and is unverified, an email is on its way.",
    )


@router.post(
    "/login",
    response_model=TokenPair,
    responses=errors(
        InvalidCredentials,
        EmailNotVerified,
        AccountDisabled,
        RateLimited,
        LoginThrottled,
    ),
)
async def login(body: LoginIn, request: Request) -> TokenPair:
    return await service.login(body.email, body.password, client_ip(request))


@router.post(
    "/refresh",
    response_model=TokenPair,
    responses=errors(InvalidToken, RefreshTokenReused),
)
async def refresh(body: RefreshIn) -> TokenPair:
    return await service.refresh(body.refresh_token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(body: RefreshIn) -> Response:
    """Ends the refresh token's session: its whole family, and the access tokens issued in it."""
    await service.logout(body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password-reset/request",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Message,
    responses=errors(RateLimited),
)
async def request_password_reset(body: EmailIn, request: Request) -> Message:
    await service.request_password_reset(body.email, client_ip(request))
    return Message(status="accepted", detail="If the account exists, a reset email is on its way.")


@router.post(
    "/password-reset/confirm",
    response_model=Message,
    responses=errors(InvalidOneTimeToken, WeakPassword, RateLimited),
)
async def confirm_password_reset(body: PasswordResetConfirmIn, request: Request) -> Message:
    await service.confirm_password_reset(body.token, body.new_password, client_ip(request))
    return Message(status="password_changed")
