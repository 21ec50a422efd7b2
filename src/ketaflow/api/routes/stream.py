"""``WS /api/v1/sessions/{session_id}/stream``: live events of one infusion session.

Authenticate with the session cookie, ``Authorization: Bearer`` or ``?token=``. A refused
handshake is answered with the usual JSON error (401/403) where the server supports WebSocket
denial responses, otherwise closed with code 1008.

Each message is a JSON event ``{"type", "ts", "data"}``; the first is ``stream.opened``. The
server closes the stream with

- 4401 when the login session ends (logout, expiry, idle timeout, revocation; re-checked every
  ``stream_recheck_s`` seconds): sign in again and reconnect;
- 1013 when the client fell too far behind: reconnect and reload the current state;
- 1011 on an internal error.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Annotated, Final

import anyio
from fastapi import APIRouter, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from ketaflow.api.deps import AppContext, ContextDep, IdPath, authenticate_once, require_stream
from ketaflow.api.security import token_from
from ketaflow.errors import AuthError
from ketaflow.services.auth import Principal
from ketaflow.services.events import StreamEvent, SubscriptionOverflowError
from ketaflow.store.types import Role

router = APIRouter(tags=["stream"])
_log = logging.getLogger("ketaflow.api.stream")

#: Who may watch a session live.
STREAM_WATCHERS: Final = (Role.NURSE, Role.PHYSICIAN)

CLOSE_SESSION_ENDED: Final[int] = 4401
CLOSE_TOO_SLOW: Final[int] = 1013
CLOSE_INTERNAL: Final[int] = 1011


@router.websocket("/sessions/{session_id}/stream")
async def session_stream(
    websocket: WebSocket,
    session_id: IdPath,
    principal: Annotated[Principal, require_stream(*STREAM_WATCHERS)],
    context: ContextDep,
) -> None:
    """Stream the live events of infusion session ``session_id``."""
    await websocket.accept()
    close_code, reason = 1000, "stream ended"
    try:
        async with context.broker.subscribe(session_id) as subscription:
            opened = StreamEvent(
                type="stream.opened", ts=context.clock.now(), data={"session_id": session_id}
            )
            await websocket.send_json(opened.to_json())
            async with anyio.create_task_group() as tasks:

                async def until_client_leaves() -> None:
                    try:
                        while True:
                            await websocket.receive_text()
                    except (WebSocketDisconnect, RuntimeError):
                        pass
                    tasks.cancel_scope.cancel()

                async def until_session_ends() -> None:
                    nonlocal close_code, reason
                    token = token_from(websocket, allow_query=True)
                    while True:
                        await anyio.sleep(context.stream_recheck_s)
                        if not await _still_valid(context, token):
                            close_code, reason = CLOSE_SESSION_ENDED, "session ended; sign in"
                            tasks.cancel_scope.cancel()
                            return

                tasks.start_soon(until_client_leaves)
                tasks.start_soon(until_session_ends)
                try:
                    async for event in subscription:
                        await websocket.send_json(event.to_json())
                except SubscriptionOverflowError:
                    close_code, reason = CLOSE_TOO_SLOW, "fell behind; reconnect"
                    tasks.cancel_scope.cancel()
    except WebSocketDisconnect:
        return
    except Exception:
        _log.exception("stream of session %s failed", session_id)
        close_code, reason = CLOSE_INTERNAL, "internal error"
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # the client already left
        await websocket.close(code=close_code, reason=reason)


async def _still_valid(context: AppContext, token: str | None) -> bool:
    try:
        # Watching is not activity: an unattended screen still reaches the idle timeout.
        await run_in_threadpool(authenticate_once, context, token, touch=False)
    except AuthError:
        return False
    return True
