"""Request dependencies: the app context, the request's unit of work, and authorisation.

Authorisation is declared on each route in one place, its signature::

    @router.get("/patients/{patient_id}")
    def get_patient(principal: Annotated[Principal, require(*CLINICAL_READERS)], ...): ...

:func:`require` authenticates the request (Bearer token or session cookie), answers 401 when
that fails and 403 when the role is not listed, and hands the route its
:class:`~ketaflow.services.auth.Principal`. ``create_app`` refuses to build an app in which a
non-public route lacks exactly one ``require``; a test walks ``app.routes`` and checks every
route against the role table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import Depends, Path
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.websockets import WebSocket

from ketaflow.api.security import SESSION_COOKIE, token_from
from ketaflow.config import Settings
from ketaflow.services.audit import AuditService
from ketaflow.services.auth import (
    Authenticator,
    PermissionDeniedError,
    Principal,
)
from ketaflow.services.clinic import ClinicRuntime, ClinicService
from ketaflow.services.clock import Clock
from ketaflow.services.events import EventBroker
from ketaflow.services.patients import PatientService
from ketaflow.services.users import UserService
from ketaflow.store.types import Role
from ketaflow.store.uow import UnitOfWork

#: Largest id accepted in a path (PostgreSQL ``integer``); larger ones are a 422, not a 500.
MAX_ID: Final[int] = 2_147_483_647


@dataclass(frozen=True, slots=True)
class AppContext:
    """Everything a request needs, built once by ``create_app`` and kept on ``app.state``."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    clock: Clock
    auth: Authenticator
    broker: EventBroker
    stream_recheck_s: float
    clinic: ClinicRuntime


def get_context(conn: HTTPConnection) -> AppContext:
    """The app's :class:`AppContext`."""
    context = conn.app.state.ketaflow
    assert isinstance(context, AppContext)
    return context


ContextDep = Annotated[AppContext, Depends(get_context)]


def get_uow(context: ContextDep) -> Iterator[UnitOfWork]:
    """The request's one transaction: committed after the route returns, before the response
    is sent, or rolled back when the route raises."""
    with UnitOfWork(context.session_factory) as uow:
        yield uow


UowDep = Annotated[UnitOfWork, Depends(get_uow, scope="function")]


class Requirement:
    """Which roles may use a route. Subclasses authenticate HTTP requests or WebSockets."""

    def __init__(self, roles: Iterable[Role], *, session_param: str | None = None) -> None:
        self.roles: frozenset[Role] = frozenset(roles)
        if not self.roles:
            raise ValueError("require() needs at least one role")
        self.session_param = session_param

    def check(self, principal: Principal, path_params: Mapping[str, Any]) -> Principal:
        """Raise :class:`PermissionDeniedError` unless ``principal`` may use the route."""
        if principal.role not in self.roles:
            allowed = ", ".join(sorted(r.value for r in self.roles))
            raise PermissionDeniedError(
                f"this action needs one of the roles {allowed}; "
                f"the signed-in role is {principal.role.value}."
            )
        if self.session_param is not None:
            try:
                session_id = int(str(path_params.get(self.session_param)))
            except ValueError:
                session_id = -1
            if not principal.may_access_session(session_id):
                raise PermissionDeniedError(
                    "this kiosk token is bound to another infusion session."
                )
        return principal

    def __repr__(self) -> str:
        roles = ", ".join(sorted(r.value for r in self.roles))
        return f"{type(self).__name__}({roles})"


# Declared so that the OpenAPI document (and the docs page's "Authorize" button) shows how to
# authenticate; the token itself is read by token_from, which applies the precedence rules.
BEARER_SCHEME = HTTPBearer(
    auto_error=False, description="The session token from POST /api/v1/auth/login."
)
COOKIE_SCHEME = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="The session cookie set at login."
)


class RoleRequirement(Requirement):
    """Authenticate an HTTP request inside the request's unit of work, then check the role."""

    def __call__(
        self,
        request: Request,
        uow: UowDep,
        context: ContextDep,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER_SCHEME)],
        _cookie: Annotated[str | None, Depends(COOKIE_SCHEME)],
    ) -> Principal:
        principal = context.auth.authenticate(uow, token_from(request))
        return self.check(principal, request.path_params)


class OwnTransactionRequirement(Requirement):
    """Authenticate an HTTP request in a short transaction of its own, in one worker-thread
    call, for routes that then run their work in one thread call too (the vital-sign feed).

    Why: with the request's unit of work, the SQLite write lock taken by the first statement
    is held across several worker-thread hops (dependency, route, commit). Under a hundred
    concurrent writers the threads fill up with requests waiting for that lock while the
    holder waits for a thread: a convoy. Here no transaction spans two hops.
    """

    async def __call__(
        self,
        request: Request,
        context: ContextDep,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER_SCHEME)],
        _cookie: Annotated[str | None, Depends(COOKIE_SCHEME)],
    ) -> Principal:
        # Read-only here (no idle-timeout touch): the route's own transaction authenticates
        # again with the touch, so the request writes in one transaction only.
        principal = await run_in_threadpool(
            authenticate_once, context, token_from(request), touch=False
        )
        return self.check(principal, request.path_params)


class StreamRequirement(Requirement):
    """Authenticate a WebSocket in its own short transaction (a stream lasts for hours and
    must not hold one open), then check the role."""

    async def __call__(self, websocket: WebSocket, context: ContextDep) -> Principal:
        token = token_from(websocket, allow_query=True)
        principal = await run_in_threadpool(authenticate_once, context, token)
        return self.check(principal, websocket.path_params)


def authenticate_once(context: AppContext, token: str | None, *, touch: bool = True) -> Principal:
    """Authenticate ``token`` in a unit of work of its own."""
    with UnitOfWork(context.session_factory) as uow:
        return context.auth.authenticate(uow, token, touch=touch)


def require(*roles: Role, session_param: str | None = None) -> Any:
    """The dependency that admits only ``roles`` to a route (401 / 403 otherwise).

    ``session_param`` names a path parameter holding an infusion session id; a kiosk token is
    then admitted only for the session it is bound to.
    """
    return Depends(RoleRequirement(roles, session_param=session_param))


def require_own_transaction(*roles: Role, session_param: str | None = None) -> Any:
    """:func:`require` for routes that open their own unit of work in a single thread call
    (see :class:`OwnTransactionRequirement`)."""
    return Depends(OwnTransactionRequirement(roles, session_param=session_param))


def require_stream(*roles: Role, session_param: str | None = None) -> Any:
    """:func:`require` for WebSocket routes."""
    return Depends(StreamRequirement(roles, session_param=session_param))


IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


def get_patient_service(uow: UowDep, context: ContextDep) -> PatientService:
    """Patient use-cases on the request's unit of work."""
    return PatientService(uow, context.clock)


def get_user_service(uow: UowDep, context: ContextDep) -> UserService:
    """Account use-cases on the request's unit of work."""
    return UserService(uow, context.auth, context.clock)


def get_audit_service(uow: UowDep, context: ContextDep) -> AuditService:
    """Audit use-cases on the request's unit of work."""
    return AuditService(uow, context.clock)


PatientServiceDep = Annotated[PatientService, Depends(get_patient_service)]
UserServiceDep = Annotated[UserService, Depends(get_user_service)]
AuditServiceDep = Annotated[AuditService, Depends(get_audit_service)]


def get_clinic_service(uow: UowDep, context: ContextDep) -> ClinicService:
    """Clinic use-cases on the request's unit of work."""
    return ClinicService(uow, context.clock, context.broker, context.clinic)


ClinicServiceDep = Annotated[ClinicService, Depends(get_clinic_service)]
