"""The one JSON error shape of the API, produced here and nowhere else.

Every error response is::

    {"error": {"code": "<stable machine code>",
               "message": "<one readable sentence, no patient data>",
               "fields": [{"field": "<dotted input name>", "message": "<what is wrong>"}]}}

Status codes follow the error tree (:mod:`ketaflow.errors`): bad input 422, not signed in 401,
not allowed 403, not found 404, conflicts / unsafe / wrong state 409, database unavailable 503.
Anything unexpected is logged with its traceback and answered with a bare 500 that reveals
nothing about the internals.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final, cast

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from ketaflow.errors import (
    AuthError,
    InputError,
    KetaflowError,
    NotFoundError,
    SafetyError,
    StateError,
    StorageError,
)
from ketaflow.services.auth import AuthenticationError, PermissionDeniedError

_log = logging.getLogger("ketaflow.api")


class FieldError(BaseModel):
    """One problem with one input field."""

    field: str
    message: str


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a sentence, and the fields at fault."""

    code: str
    message: str
    fields: list[FieldError]


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


#: Status per error class; the first match in this order wins (subclasses before bases).
STATUS_BY_ERROR: Final[tuple[tuple[type[KetaflowError], int], ...]] = (
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (AuthError, 403),
    (InputError, 422),
    (NotFoundError, 404),
    (SafetyError, 409),
    (StateError, 409),
    (StorageError, 503),
)

_HTTP_CODES: Final[dict[int, str]] = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}

#: Documented on every API route, so the OpenAPI document lists the error shape.
ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": ErrorResponse, "description": "Not signed in, or the session ended."},
    403: {"model": ErrorResponse, "description": "The role may not do this."},
    404: {"model": ErrorResponse, "description": "No such record."},
    409: {"model": ErrorResponse, "description": "Conflicts with existing records or state."},
    422: {"model": ErrorResponse, "description": "Invalid input; see error.fields."},
    503: {"model": ErrorResponse, "description": "The database is unavailable."},
}


def status_for(exc: KetaflowError) -> int:
    """The HTTP status for a ketaflow error (400 for a kind not listed)."""
    for error_class, status in STATUS_BY_ERROR:
        if isinstance(exc, error_class):
            return status
    return 400


def error_body(code: str, message: str, fields: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """The error shape as a plain dict."""
    return ErrorResponse(
        error=ErrorDetail(
            code=code,
            message=message,
            fields=[FieldError(field=f, message=m) for f, m in fields],
        )
    ).model_dump()


def error_response(
    status: int,
    code: str,
    message: str,
    fields: Sequence[tuple[str, str]] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A JSON error response in the one shape."""
    return JSONResponse(error_body(code, message, fields), status_code=status, headers=headers)


async def _ketaflow_error(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, KetaflowError)
    status = status_for(exc)
    fields = [(exc.field, exc.message)] if exc.field else []
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status >= 500:
        _log.warning("%s -> %s (%s)", conn.url.path, status, exc.code)
    response = error_response(status, exc.code, exc.message, fields, headers)
    if isinstance(conn, WebSocket) and "websocket.http.response" not in conn.scope.get(
        "extensions", {}
    ):
        # This server cannot answer a WebSocket handshake with an HTTP error: close instead
        # (1008 = policy violation), with the code as the reason.
        await conn.close(code=1008, reason=exc.code)
        return None
    return response


def _field_name(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) if parts else "body"


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Only the location and pydantic's message: the rejected input may be patient data.
    fields = [
        (_field_name(err.get("loc", ())), str(err.get("msg", "invalid"))) for err in exc.errors()
    ]
    return error_response(
        422,
        "invalid_input",
        f"the request has {len(fields)} invalid field(s); see fields.",
        fields,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = f"no API endpoint at {request.url.path}; see /api/v1/docs."
    if exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}."
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, message, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into the one shape."""
    app.add_exception_handler(KetaflowError, cast(ExceptionHandler, _ketaflow_error))
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(CatchAllMiddleware)


class CatchAllMiddleware:
    """Turn an unexpected exception into a logged, bare 500 in the error shape.

    Sits inside the security-headers middleware, so the 500 carries the same headers as any
    other response. The exception is not re-raised: the server's own traceback logging would
    repeat it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            _log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                return
            response = error_response(
                500,
                "internal_error",
                "an unexpected error occurred and was logged; check whether the change took effect "
                "before repeating it.",
            )
            await response(scope, receive, send)
