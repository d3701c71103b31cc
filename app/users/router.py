from fastapi import APIRouter

from app.auth.dependencies import CurrentUser
from app.errors import FieldNotForRole, Unprocessable
from app.kit.ids import parse_object_id
from app.ops.openapi import errors
from app.users import service
from app.users.schemas import Me, PublicUser, UserUpdate

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/me", response_model=Me, response_model_exclude_unset=True)
async def read_me(user: CurrentUser) -> Me:
    return Me.of(user)


@router.patch("/me", response_model=Me, response_model_exclude_unset=True,
              responses=errors(FieldNotForRole, Unprocessable))
async def update_me(body: UserUpdate, user: CurrentUser) -> Me:
    return Me.of(await service.update_profile(user, body))


@router.get("/{user_id}", response_model=PublicUser)
async def read_user(user_id: str, _: CurrentUser) -> PublicUser:
    return PublicUser.of(await service.get_user(parse_object_id(user_id, "user")))
