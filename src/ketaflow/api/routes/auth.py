"""Sign-in and session endpoints under ``/api/v1/auth``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response, status

from ketaflow.api.deps import ContextDep, UowDep, require
from ketaflow.api.schemas import (
    KioskTokenCreate,
    KioskTokenOut,
    LoginRequest,
    LoginResponse,
    PasswordChange,
    PrincipalOut,
)
from ketaflow.api.security import SESSION_COOKIE
from ketaflow.services.auth import ALL_ROLES, KIOSK_ISSUER_ROLES, STAFF_ROLES, Principal

router = APIRouter(prefix="/auth", tags=["auth"])


def _principal_out(principal: Principal) -> PrincipalOut:
    return PrincipalOut(
        user_id=principal.user_id,
        username=principal.username,
        role=principal.role,
        bound_session_id=principal.bound_session_id,
        expires_at=principal.expires_at,
    )


@router.post("/login", response_model=LoginResponse)
def login(
    body: LoginRequest, request: Request, response: Response, uow: UowDep, context: ContextDep
) -> LoginResponse:
    """Sign in. Returns the session token and sets it as an HttpOnly, SameSite=Strict cookie."""
    issued = context.auth.login(uow, body.username, body.password)
    response.set_cookie(
        SESSION_COOKIE,
        issued.token,
        max_age=int(context.auth.policy.session_ttl.total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return LoginResponse(
        token=issued.token,
        expires_at=issued.expires_at,
        principal=_principal_out(issued.principal),
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(
    principal: Annotated[Principal, require(*ALL_ROLES)],
    response: Response,
    uow: UowDep,
    context: ContextDep,
) -> None:
    """End the current session and clear the cookie."""
    context.auth.logout(uow, principal)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


@router.get("/me", response_model=PrincipalOut)
def me(principal: Annotated[Principal, require(*ALL_ROLES)]) -> PrincipalOut:
    """Who is signed in, with which role, until when."""
    return _principal_out(principal)


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT)
def change_password(
    body: PasswordChange,
    principal: Annotated[Principal, require(*STAFF_ROLES)],
    uow: UowDep,
    context: ContextDep,
) -> None:
    """Change your own password; your other sessions end."""
    context.auth.change_password(uow, principal, body.current_password, body.new_password)


@router.post("/kiosk-tokens", response_model=KioskTokenOut, status_code=status.HTTP_201_CREATED)
def issue_kiosk_token(
    body: KioskTokenCreate,
    principal: Annotated[Principal, require(*KIOSK_ISSUER_ROLES)],
    uow: UowDep,
    context: ContextDep,
) -> KioskTokenOut:
    """Issue a token for a patient kiosk, valid for ONE infusion session."""
    issued = context.auth.issue_kiosk_token(uow, principal, body.infusion_session_id)
    return KioskTokenOut(
        token=issued.token,
        expires_at=issued.expires_at,
        bound_session_id=body.infusion_session_id,
    )
