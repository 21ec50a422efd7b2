"""The live stream over a real WebSocket (Starlette's test client runs the app's event loop)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from ketaflow.api.deps import AppContext
from ketaflow.services.events import publish_after_commit
from ketaflow.services.users import UserView
from ketaflow.store.types import Role
from ketaflow.store.uow import UnitOfWork
from service_testkit import PASSWORD, T0

#: Longest the tests wait for the server to notice something, seconds.
WAIT_S = 5.0


def _token(client: TestClient, make_user: Callable[..., UserView], role: Role) -> str:
    user = make_user(role)
    response = client.post(
        "/api/v1/auth/login", json={"username": user.username, "password": PASSWORD}
    )
    client.cookies.clear()
    token: str = response.json()["token"]
    return token


def _wait_for_subscribers(context: AppContext, session_id: int, expected: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while context.broker.subscriber_count(session_id) != expected:
        assert time.monotonic() < deadline, "subscriber count never reached the expected value"
        time.sleep(0.01)


@pytest.mark.parametrize("how", ["query", "bearer", "cookie"])
def test_events_of_the_session_reach_the_client_in_order(
    client: TestClient, context: AppContext, make_user: Callable[..., UserView], how: str
) -> None:
    token = _token(client, make_user, Role.NURSE)
    url, headers = "/api/v1/sessions/5/stream", {}
    if how == "query":
        url += f"?token={token}"
    elif how == "bearer":
        headers = {"Authorization": f"Bearer {token}"}
    else:
        client.cookies.set("ketaflow_session", token)
    with client.websocket_connect(url, headers=headers) as ws:
        assert ws.receive_json() == {
            "type": "stream.opened",
            "ts": "2025-03-01T09:00:00.000000Z",
            "data": {"session_id": 5},
        }
        context.broker.publish(6, "vitals.recorded", {"session": "other"}, ts=T0)
        for i in range(3):
            context.broker.publish(5, "vitals.recorded", {"hr_bpm": 70 + i}, ts=T0)
        received = [ws.receive_json()["data"]["hr_bpm"] for _ in range(3)]
    assert received == [70, 71, 72]
    _wait_for_subscribers(context, 5, 0)


def test_events_committed_by_a_unit_of_work_are_streamed(
    client: TestClient, context: AppContext, make_user: Callable[..., UserView]
) -> None:
    token = _token(client, make_user, Role.PHYSICIAN)
    with client.websocket_connect(f"/api/v1/sessions/9/stream?token={token}") as ws:
        ws.receive_json()
        with UnitOfWork(context.session_factory) as uow:
            publish_after_commit(
                uow, context.broker, 9, "rate.changed", {"rate_mg_per_h": 12.0}, ts=T0
            )
        event = ws.receive_json()
    assert (event["type"], event["data"]) == ("rate.changed", {"rate_mg_per_h": 12.0})


def test_the_stream_closes_with_4401_when_the_login_session_ends(
    client: TestClient, make_user: Callable[..., UserView]
) -> None:
    token = _token(client, make_user, Role.NURSE)
    with client.websocket_connect(f"/api/v1/sessions/5/stream?token={token}") as ws:
        ws.receive_json()
        logout = client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})
        assert logout.status_code == 204
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()  # the server re-checks every 0.05 s in tests
    assert closed.value.code == 4401


@pytest.mark.parametrize(("role", "status"), [(None, 401), (Role.KIOSK, 403), (Role.ADMIN, 403)])
def test_the_handshake_is_refused_with_the_error_shape(
    client: TestClient, auth_headers: Callable[..., dict[str, str]], role: Role | None, status: int
) -> None:
    headers = {} if role is None else auth_headers(role)
    with (
        pytest.raises(WebSocketDenialResponse) as denial,
        client.websocket_connect("/api/v1/sessions/1/stream", headers=headers),
    ):
        pass
    assert denial.value.status_code == status
    assert set(denial.value.json()["error"]) == {"code", "message", "fields"}
