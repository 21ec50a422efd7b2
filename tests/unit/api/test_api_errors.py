"""One JSON error shape for every failure, from one place; security headers on everything."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ketaflow.api import create_app
from ketaflow.api.deps import UowDep, require
from ketaflow.api.security import SECURITY_HEADERS
from ketaflow.config import Settings
from ketaflow.errors import HardLimitError
from ketaflow.services.auth import Principal
from ketaflow.store.tables import User
from ketaflow.store.types import Role
from service_testkit import FAST_HASHER

AdminPrincipal = Annotated[Principal, require(Role.ADMIN)]

PATIENT = {
    "mrn": "MRN-1",
    "family_name": "Doe",
    "given_name": "Jane",
    "birth_date": "1980-01-02",
    "sex": "female",
}


def _assert_shape(body: dict[str, Any], code: str) -> list[dict[str, str]]:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    for field in body["error"]["fields"]:
        assert set(field) == {"field", "message"}
    fields: list[dict[str, str]] = body["error"]["fields"]
    return fields


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({k: v for k, v in PATIENT.items() if k != "mrn"}, {"mrn"}),
        ({**PATIENT, "birth_date": "yesterday", "sex": "f"}, {"birth_date", "sex"}),
        ({**PATIENT, "weight": 70}, {"weight"}),  # unknown fields are refused
        ({**PATIENT, "mrn": "has space"}, {"mrn"}),
        ({**PATIENT, "given_name": "Jo\x00"}, {"given_name"}),  # refused by the service rules
        ({**PATIENT, "birth_date": "2999-01-01"}, {"birth_date"}),  # the future, by the clock
    ],
)
def test_invalid_input_is_422_with_one_entry_per_field(
    client: TestClient,
    auth_headers: Callable[..., dict[str, str]],
    payload: dict[str, Any],
    fields: set[str],
) -> None:
    response = client.post("/api/v1/patients", json=payload, headers=auth_headers(Role.FRONT_DESK))
    assert response.status_code == 422
    reported = _assert_shape(response.json(), "invalid_input")
    assert {f["field"] for f in reported} == fields


def test_query_and_path_limits_are_422_not_500(
    client: TestClient, auth_headers: Callable[..., dict[str, str]]
) -> None:
    headers = auth_headers(Role.NURSE)
    for url, field in [
        ("/api/v1/patients?limit=0", "limit"),
        ("/api/v1/patients?offset=-1", "offset"),
        ("/api/v1/patients/99999999999999999999", "patient_id"),
        ("/api/v1/patients/0", "patient_id"),
        ("/api/v1/patients/abc", "patient_id"),
    ]:
        response = client.get(url, headers=headers)
        assert response.status_code == 422, url
        assert [f["field"] for f in _assert_shape(response.json(), "invalid_input")] == [field]


def test_malformed_json_is_422(
    client: TestClient, auth_headers: Callable[..., dict[str, str]]
) -> None:
    response = client.post(
        "/api/v1/patients",
        content=b"{not json",
        headers={**auth_headers(Role.FRONT_DESK), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    _assert_shape(response.json(), "invalid_input")


def test_domain_errors_map_to_their_status(
    client: TestClient, auth_headers: Callable[..., dict[str, str]]
) -> None:
    desk = auth_headers(Role.FRONT_DESK)
    assert client.post("/api/v1/patients", json=PATIENT, headers=desk).status_code == 201
    duplicate = client.post("/api/v1/patients", json=PATIENT, headers=desk)
    assert duplicate.status_code == 409
    assert _assert_shape(duplicate.json(), "conflict") == [
        {"field": "mrn", "message": duplicate.json()["error"]["message"]}
    ]
    missing = client.get("/api/v1/patients/4242", headers=desk)
    assert missing.status_code == 404
    _assert_shape(missing.json(), "not_found")
    forbidden = client.get("/api/v1/users", headers=desk)
    assert forbidden.status_code == 403
    _assert_shape(forbidden.json(), "forbidden")


def test_unknown_path_and_wrong_method_use_the_shape(client: TestClient) -> None:
    unknown = client.get("/api/v1/nothing-here")
    assert unknown.status_code == 404
    assert _assert_shape(unknown.json(), "not_found") == []
    assert "/api/v1/docs" in unknown.json()["error"]["message"]
    wrong = client.delete("/api/v1/health")
    assert wrong.status_code == 405
    _assert_shape(wrong.json(), "method_not_allowed")


def test_safety_errors_are_409(app: FastAPI, client: TestClient) -> None:
    @app.get("/api/v1/test-only/unsafe")
    def unsafe() -> None:
        raise HardLimitError("rate_mg_per_min must be <= 5; got 7. Check the weight units.")

    response = client.get("/api/v1/test-only/unsafe")
    assert response.status_code == 409
    _assert_shape(response.json(), "hard_limit")


def test_unexpected_errors_are_a_bare_logged_500_with_the_headers(
    app: FastAPI, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/api/v1/test-only/crash")
    def crash() -> None:
        raise RuntimeError("secret detail: /srv/ketaflow/config password=hunter2")

    with caplog.at_level(logging.ERROR, logger="ketaflow.api"):
        response = client.get("/api/v1/test-only/crash")
    assert response.status_code == 500
    _assert_shape(response.json(), "internal_error")
    assert "secret" not in response.text
    assert "hunter2" not in response.text
    assert "secret detail" in caplog.text  # the operator still sees it, in the log
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value


def test_unreachable_database_is_503(tmp_path: Path) -> None:
    # Nothing listens on port 1: connections are refused at once.
    settings = Settings(
        data_dir=tmp_path, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none"
    )
    app = create_app(settings, password_hasher=FAST_HASHER, migrate_on_startup=False)
    with TestClient(app) as client:
        login = client.post("/api/v1/auth/login", json={"username": "x" * 3, "password": "y"})
        health = client.get("/api/v1/health")
    assert login.status_code == 503
    _assert_shape(login.json(), "storage_unavailable")
    assert health.status_code == 503
    _assert_shape(health.json(), "storage_unavailable")


@pytest.mark.parametrize("path", ["/api/v1/health", "/api/v1/nothing", "/api/v1/docs"])
def test_security_headers_on_every_response(client: TestClient, path: str) -> None:
    response = client.get(path)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value


def test_the_commit_happens_before_the_response_is_sent(
    app: FastAPI, client: TestClient, auth_headers: Callable[..., dict[str, str]]
) -> None:
    """A change that fails only at COMMIT must not be reported as a success."""

    @app.post("/api/v1/test-only/fails-at-commit")
    def fails_at_commit(principal: AdminPrincipal, uow: UowDep) -> dict[str, bool]:
        existing = uow.users.get(principal.user_id)
        assert existing is not None
        # Not flushed here: the duplicate username is only refused when the request commits.
        uow.session.add(
            User(
                username=existing.username,
                password_hash="x",
                role=Role.NURSE,
                created_at=existing.created_at,
                updated_at=existing.created_at,
            )
        )
        return {"ok": True}

    response = client.post("/api/v1/test-only/fails-at-commit", headers=auth_headers(Role.ADMIN))
    assert response.status_code == 409
    _assert_shape(response.json(), "conflict")
