"""API routers, one module per entity; :data:`api_router` gathers them under ``/api/v1``."""

from __future__ import annotations

from fastapi import APIRouter

from ketaflow.api.errors import ERROR_RESPONSES
from ketaflow.api.routes import audit, auth, health, patients, stream, users

API_PREFIX = "/api/v1"


def build_api_router() -> APIRouter:
    """A fresh router holding every endpoint (no module-level app state)."""
    router = APIRouter(prefix=API_PREFIX)
    router.include_router(health.router)
    for module in (auth, users, patients, audit):
        router.include_router(module.router, responses=ERROR_RESPONSES)
    router.include_router(stream.router)
    return router
