"""Account administration under ``/api/v1/users`` (administrators only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, status

from ketaflow.api.deps import IdPath, UserServiceDep, require
from ketaflow.api.schemas import PasswordReset, UserCreate, UserOut, UserUpdate
from ketaflow.services.auth import Principal
from ketaflow.store.types import Role

router = APIRouter(prefix="/users", tags=["users"])

Admin = Annotated[Principal, require(Role.ADMIN)]


@router.get("", response_model=list[UserOut])
def list_users(principal: Admin, users: UserServiceDep) -> list[UserOut]:
    """Every staff account."""
    return [UserOut.model_validate(u) for u in users.list_all()]


@router.post("", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, principal: Admin, users: UserServiceDep) -> UserOut:
    """Create a staff account."""
    view = users.create(
        principal.actor, username=body.username, password=body.password, role=body.role
    )
    return UserOut.model_validate(view)


@router.get("/{user_id}", response_model=UserOut)
def get_user(user_id: IdPath, principal: Admin, users: UserServiceDep) -> UserOut:
    """One staff account."""
    return UserOut.model_validate(users.get(user_id))


@router.patch("/{user_id}", response_model=UserOut)
def update_user(
    user_id: IdPath, body: UserUpdate, principal: Admin, users: UserServiceDep
) -> UserOut:
    """Change role or active flag; the account's sessions end."""
    view = users.update(principal.actor, user_id, role=body.role, active=body.active)
    return UserOut.model_validate(view)


@router.post("/{user_id}/password", response_model=UserOut)
def reset_password(
    user_id: IdPath, body: PasswordReset, principal: Admin, users: UserServiceDep
) -> UserOut:
    """Set a new password for an account; its sessions end."""
    return UserOut.model_validate(users.set_password(principal.actor, user_id, body.new_password))


@router.post("/{user_id}/unlock", response_model=UserOut)
def unlock_user(user_id: IdPath, principal: Admin, users: UserServiceDep) -> UserOut:
    """Lift a lock-out after failed sign-ins."""
    return UserOut.model_validate(users.unlock(principal.actor, user_id))
