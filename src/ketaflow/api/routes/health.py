"""``GET /api/v1/health``: public liveness check."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from ketaflow import __version__
from ketaflow.api.deps import ContextDep
from ketaflow.api.errors import ErrorResponse, error_response
from ketaflow.api.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=HealthOut,
    responses={503: {"model": ErrorResponse, "description": "The database is unreachable."}},
)
async def health(context: ContextDep) -> HealthOut | JSONResponse:
    """Whether the service runs and reaches its database. Public; reveals nothing else."""

    def ping() -> None:
        with context.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except SQLAlchemyError:
        return error_response(
            503, "storage_unavailable", "the database is unreachable; check the database server."
        )
    return HealthOut(status="ok", database="ok", version=__version__)
