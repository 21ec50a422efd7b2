"""Credentials on the wire, and the security headers on every response.

A request proves who it is by ``Authorization: Bearer <token>`` (API clients), or by the
``ketaflow_session`` cookie set at login (HttpOnly, SameSite=Strict, Secure over HTTPS; the
browser UI). The live stream, which browsers open without custom headers, also accepts
``?token=``.
"""

from __future__ import annotations

from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE: Final[str] = "ketaflow_session"

#: Sent with every response. ``no-store`` because responses may hold patient data that must
#: not linger in browser or proxy caches.
SECURITY_HEADERS: Final[dict[str, str]] = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def token_from(conn: HTTPConnection, *, allow_query: bool = False) -> str | None:
    """The session token of a request: Bearer header, then cookie, then (streams) ``?token=``."""
    authorization = conn.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    cookie = conn.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie
    if allow_query:
        return conn.query_params.get("token") or None
    return None


class SecurityHeadersMiddleware:
    """Add :data:`SECURITY_HEADERS` to every HTTP response (errors included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
