"""Who is calling: the current user, role checks and the ownership helper."""

from typing import Annotated

from beanie import PydanticObjectId
from bson.errors import InvalidId
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth import tokens
from app.config import get_settings
from app.errors import AccountDisabled, InvalidToken, NotFound, NotOwner, RateLimited, WrongRole, raises
from app.kit import ratelimit
from app.kit.security import decode_access_token
from app.users.models import Role, User

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /api/auth/login")


@raises(InvalidToken, AccountDisabled, RateLimited)
async def get_current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise InvalidToken("Send Authorization: Bearer <access_token>.")
    claims = decode_access_token(credentials.credentials)
    try:
        user_id = PydanticObjectId(claims["sub"])
    except (InvalidId, TypeError):
        raise InvalidToken() from None
    await ratelimit.enforce("user", claims["sub"], get_settings().user_rate_per_minute)
    user = await User.get(user_id)
    if user is None:
        raise InvalidToken()
    if not user.is_active:
        raise AccountDisabled()
    if tokens.access_revoked(user, claims):
        raise InvalidToken("This token was revoked (logout or password reset).")
    request.state.user_id = str(user.id)
    return user


def require_roles(*roles: Role):
    @raises(WrongRole)
    async def dependency(user: Annotated[User, Depends(get_current_user)]) -> User:
        if user.role not in roles:
            raise WrongRole(f"This needs the {' or '.join(roles)} role.")
        return user

    return dependency


CurrentUser = Annotated[User, Depends(get_current_user)]
BuilderUser = Annotated[User, Depends(require_roles("builder"))]
TesterUser = Annotated[User, Depends(require_roles("tester"))]
AdminUser = Annotated[User, Depends(require_roles("admin"))]


def ensure_owner(owner_id: PydanticObjectId | None, user: User, *, admin_ok: bool = True, hide: bool = False) -> None:
    """Owners (and admins, unless admin_ok is False) pass. Others get 403, or 404 when hide=True
    so that the resource's existence does not leak."""
    if owner_id is not None and owner_id == user.id:
        return
    if admin_ok and user.role == "admin":
        return
    raise NotFound() if hide else NotOwner()
