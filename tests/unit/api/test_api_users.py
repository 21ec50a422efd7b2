"""Account administration over HTTP (administrators only)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from ketaflow.store.types import Role
from service_testkit import PASSWORD


def test_admin_manages_accounts_end_to_end(
    client: TestClient, auth_headers: Callable[..., dict[str, str]]
) -> None:
    admin = auth_headers(Role.ADMIN)
    created = client.post(
        "/api/v1/users",
        json={"username": "nurse.kim", "password": PASSWORD, "role": "nurse"},
        headers=admin,
    )
    assert created.status_code == 201
    user = created.json()
    assert "password_hash" not in user
    assert (user["username"], user["role"], user["active"]) == ("nurse.kim", "nurse", True)
    assert user["id"] in [u["id"] for u in client.get("/api/v1/users", headers=admin).json()]
    assert client.get(f"/api/v1/users/{user['id']}", headers=admin).json() == user

    promoted = client.patch(
        f"/api/v1/users/{user['id']}", json={"role": "physician"}, headers=admin
    )
    assert promoted.json()["role"] == "physician"
    reset = client.post(
        f"/api/v1/users/{user['id']}/password",
        json={"new_password": "a new long passphrase"},
        headers=admin,
    )
    assert reset.status_code == 200
    login = client.post(
        "/api/v1/auth/login", json={"username": "nurse.kim", "password": "a new long passphrase"}
    )
    assert login.json()["principal"]["role"] == "physician"
    unlocked = client.post(f"/api/v1/users/{user['id']}/unlock", headers=admin)
    assert unlocked.json()["failed_count"] == 0


def test_account_rules_are_enforced_over_http(
    client: TestClient, auth_headers: Callable[..., dict[str, str]]
) -> None:
    admin = auth_headers(Role.ADMIN)
    kiosk = client.post(
        "/api/v1/users",
        json={"username": "kiosk1", "password": PASSWORD, "role": "kiosk"},
        headers=admin,
    )
    assert kiosk.status_code == 422
    assert kiosk.json()["error"]["fields"][0]["field"] == "role"
    client.post(
        "/api/v1/users",
        json={"username": "dup1", "password": PASSWORD, "role": "nurse"},
        headers=admin,
    )
    dup = client.post(
        "/api/v1/users",
        json={"username": "dup1", "password": PASSWORD, "role": "nurse"},
        headers=admin,
    )
    assert dup.status_code == 409
    me = client.get("/api/v1/auth/me", headers=admin).json()
    last_admin = client.patch(
        f"/api/v1/users/{me['user_id']}", json={"active": False}, headers=admin
    )
    assert last_admin.status_code == 409
    assert client.get("/api/v1/users/4242", headers=admin).status_code == 404
