"""Sign-in over HTTP: cookie flags, Bearer and cookie credentials, logout, kiosk tokens."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.testclient import TestClient

from ketaflow.api.security import SESSION_COOKIE
from ketaflow.services.clock import ManualClock
from ketaflow.services.users import UserView
from ketaflow.store.types import Role
from service_testkit import PASSWORD

MakeUser = Callable[..., UserView]


def _login(
    client: TestClient, username: str, password: str = PASSWORD
) -> tuple[int, dict[str, object], str]:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    return response.status_code, response.json(), response.headers.get("set-cookie", "")


def test_login_returns_the_token_and_sets_a_strict_httponly_cookie(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user(Role.NURSE, username="nurse1")
    status, body, cookie = _login(client, "nurse1")
    assert status == 200
    assert body["principal"] == {
        "user_id": 1,
        "username": "nurse1",
        "role": "nurse",
        "bound_session_id": None,
        "expires_at": "2025-03-01T21:00:00Z",
    }
    parts = [p.strip().lower() for p in cookie.split(";")]
    assert parts[0] == f"{SESSION_COOKIE}={body['token']}".lower()
    assert {"httponly", "samesite=strict", "path=/", "max-age=43200"} <= set(parts)
    assert "secure" not in parts  # plain http (tests); over https it is set, see below


def test_the_cookie_is_secure_over_https(app: FastAPI, make_user: MakeUser) -> None:
    make_user(Role.NURSE, username="nurse1")
    with TestClient(app, base_url="https://testserver") as client:
        assert "secure" in [p.strip().lower() for p in _login(client, "nurse1")[2].split(";")]


def test_cookie_or_bearer_authenticates_and_a_bearer_header_takes_precedence(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user(Role.NURSE, username="nurse1")
    make_user(Role.PHYSICIAN, username="doc1")
    _login(client, "nurse1")  # the client keeps the cookie
    assert client.get("/api/v1/auth/me").json()["username"] == "nurse1"
    doc_token = _login(TestClient(client.app), "doc1")[1]["token"]
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {doc_token}"})
    assert me.json()["username"] == "doc1"
    basic = client.get("/api/v1/auth/me", headers={"Authorization": "Basic bnVyc2U6eA=="})
    assert basic.status_code == 401  # a non-Bearer header is not silently ignored


def test_logout_ends_the_session_and_clears_the_cookie(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user(Role.NURSE, username="nurse1")
    token = _login(client, "nurse1")[1]["token"]
    headers = {"Authorization": f"Bearer {token}"}
    response = client.post("/api/v1/auth/logout", headers=headers)
    assert response.status_code == 204
    assert 'ketaflow_session=""' in response.headers["set-cookie"]
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 401


def test_failed_logins_lock_the_account(client: TestClient, make_user: MakeUser) -> None:
    make_user(Role.NURSE, username="nurse1")
    bodies = [_login(client, "nurse1", "wrong password!!") for _ in range(5)]
    assert {status for status, _, _ in bodies} == {401}
    assert all(cookie == "" for _, _, cookie in bodies)
    status, body, _ = _login(client, "nurse1")
    assert status == 401
    assert "locked for 15 minutes" in str(body)


def test_idle_sessions_expire_by_the_app_clock(
    client: TestClient, make_user: MakeUser, clock: ManualClock
) -> None:
    make_user(Role.NURSE, username="nurse1")
    headers = {"Authorization": f"Bearer {_login(client, 'nurse1')[1]['token']}"}
    client.cookies.clear()
    clock.advance(minutes=14)
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 200
    clock.advance(minutes=15)
    expired = client.get("/api/v1/auth/me", headers=headers)
    assert expired.status_code == 401
    assert "idle" in expired.json()["error"]["message"]


def test_change_own_password(client: TestClient, make_user: MakeUser) -> None:
    make_user(Role.FRONT_DESK, username="desk1")
    headers = {"Authorization": f"Bearer {_login(client, 'desk1')[1]['token']}"}
    weak = client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=headers,
    )
    assert weak.status_code == 422
    assert [f["field"] for f in weak.json()["error"]["fields"]] == ["new_password"]
    ok = client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "a much longer passphrase"},
        headers=headers,
    )
    assert ok.status_code == 204
    assert _login(client, "desk1", "a much longer passphrase")[0] == 200


def test_kiosk_tokens_are_issued_for_one_session_and_can_do_nothing_else(
    client: TestClient, auth_headers: Callable[..., dict[str, str]]
) -> None:
    nurse = auth_headers(Role.NURSE)
    issued = client.post(
        "/api/v1/auth/kiosk-tokens", json={"infusion_session_id": 12}, headers=nurse
    )
    assert issued.status_code == 201
    assert issued.headers.get("set-cookie") is None  # the nurse's own cookie is untouched
    kiosk = {"Authorization": f"Bearer {issued.json()['token']}"}
    me = client.get("/api/v1/auth/me", headers=kiosk).json()
    assert (me["role"], me["bound_session_id"]) == ("kiosk", 12)
    assert client.get("/api/v1/patients", headers=kiosk).status_code == 403
    bad = client.post("/api/v1/auth/kiosk-tokens", json={"infusion_session_id": 0}, headers=nurse)
    assert bad.status_code == 422
