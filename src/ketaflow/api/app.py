"""The FastAPI application factory. Importing this module builds nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from starlette.concurrency import run_in_threadpool

from ketaflow import __version__
from ketaflow.api.deps import AppContext, Requirement
from ketaflow.api.errors import install_error_handlers
from ketaflow.api.routes import API_PREFIX, build_api_router
from ketaflow.api.security import SecurityHeadersMiddleware
from ketaflow.config import Settings, get_settings
from ketaflow.services.auth import Authenticator, AuthPolicy
from ketaflow.services.clock import Clock, SystemClock
from ketaflow.services.events import EventBroker
from ketaflow.store.db import make_engine, make_session_factory
from ketaflow.store.migrate import upgrade

#: Routes anyone may call: liveness, sign-in, and the API description.
PUBLIC_PATHS: Final[frozenset[str]] = frozenset(
    {
        f"{API_PREFIX}/health",
        f"{API_PREFIX}/auth/login",
        f"{API_PREFIX}/openapi.json",
        f"{API_PREFIX}/docs",
    }
)

_DESCRIPTION = (
    "ketaflow clinic service: clinical decision support for medically supervised ketamine "
    "infusions. Not for unsupervised use. Every endpoint except health and login needs a "
    "session token (Authorization: Bearer, or the session cookie set at login)."
)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    password_hasher: PasswordHasher | None = None,
    broker: EventBroker | None = None,
    migrate_on_startup: bool = True,
    stream_recheck_s: float = 30.0,
) -> FastAPI:
    """Build the API application for ``settings`` (default: from the environment).

    Parameters
    ----------
    settings: where the database is and the session rules.
    clock: the time source (default the system clock; tests pass a ``ManualClock``).
    password_hasher: Argon2 parameters (default argon2-cffi's RFC 9106 profile).
    broker: the live-event broker (default a new in-process one).
    migrate_on_startup: apply pending migrations when the app starts (lifespan).
    stream_recheck_s: how often a live stream re-checks its login session, seconds.

    Nothing connects to the database until the app starts or serves a request.
    """
    settings = settings if settings is not None else get_settings()
    clock = clock if clock is not None else SystemClock()
    engine = make_engine(settings)
    context = AppContext(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        clock=clock,
        auth=Authenticator(AuthPolicy.from_settings(settings), clock, password_hasher),
        broker=broker if broker is not None else EventBroker(),
        stream_recheck_s=stream_recheck_s,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if migrate_on_startup:
            await run_in_threadpool(upgrade, engine)
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="ketaflow",
        version=__version__,
        description=_DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        swagger_ui_oauth2_redirect_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ketaflow = context
    install_error_handlers(app)
    app.add_middleware(SecurityHeadersMiddleware)
    app.include_router(build_api_router())
    check_authorisation_declared(app)
    return app


@dataclass(frozen=True, slots=True)
class ServedRoute:
    """A route as the app serves it (router prefixes applied) and who may call it."""

    path: str
    methods: tuple[str, ...]  # ("WS",) for a WebSocket route
    is_api: bool  # False for the OpenAPI document and docs pages
    requirements: tuple[Requirement, ...]


def served_routes(app: FastAPI) -> list[ServedRoute]:
    """Every route of ``app`` with the :class:`Requirement` objects declared on it."""
    routes: list[ServedRoute] = []
    for context in iter_route_contexts(app.routes):
        original = context.original_route
        path = context.path or ""
        if isinstance(original, APIRoute | APIWebSocketRoute):
            requirements = tuple(
                d.call for d in context.dependant.dependencies if isinstance(d.call, Requirement)
            )
            websocket = isinstance(original, APIWebSocketRoute)
            methods = ("WS",) if websocket else tuple(sorted(context.methods or ()))
            routes.append(ServedRoute(path, methods, True, requirements))
        else:
            routes.append(ServedRoute(path, tuple(sorted(context.methods or ())), False, ()))
    return routes


def check_authorisation_declared(app: FastAPI) -> None:
    """Refuse an app in which a non-public API route lacks exactly one ``require``."""
    for route in served_routes(app):
        if not route.is_api:
            if route.path not in PUBLIC_PATHS:
                raise RuntimeError(f"route {route.path} is not an API route and not public")
            continue
        if route.path in PUBLIC_PATHS:
            if route.requirements:
                raise RuntimeError(f"public route {route.path} must not require a role")
        elif len(route.requirements) != 1:
            raise RuntimeError(
                f"route {route.path} must declare exactly one require(...); "
                f"found {len(route.requirements)}"
            )
