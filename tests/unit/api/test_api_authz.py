"""Authorisation of every route, proved by walking ``app.routes`` against one role table.

Adding a route without adding it to :data:`EXPECTED` fails ``test_the_table_lists_every_route``;
a route whose ``require(...)`` differs from the table fails the declaration test; and the HTTP
tests show that the declarations are what the server enforces.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Final

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from ketaflow.api.app import PUBLIC_PATHS, check_authorisation_declared, served_routes
from ketaflow.api.deps import require
from ketaflow.services.auth import Principal
from ketaflow.store.types import Role

A, P, N, F, K = Role.ADMIN, Role.PHYSICIAN, Role.NURSE, Role.FRONT_DESK, Role.KIOSK
ALL: Final = frozenset(Role)
STAFF: Final = frozenset({A, P, N, F})
PUBLIC: Final = None

#: (method, path) -> roles allowed; None = public. "WS" is the WebSocket stream.
EXPECTED: Final[dict[tuple[str, str], frozenset[Role] | None]] = {
    ("GET", "/api/v1/health"): PUBLIC,
    ("POST", "/api/v1/auth/login"): PUBLIC,
    ("GET", "/api/v1/auth/me"): ALL,
    ("POST", "/api/v1/auth/password"): STAFF,
    ("POST", "/api/v1/auth/kiosk-tokens"): frozenset({N, P}),
    ("GET", "/api/v1/users"): frozenset({A}),
    ("POST", "/api/v1/users"): frozenset({A}),
    ("GET", "/api/v1/users/{user_id}"): frozenset({A}),
    ("PATCH", "/api/v1/users/{user_id}"): frozenset({A}),
    ("POST", "/api/v1/users/{user_id}/password"): frozenset({A}),
    ("POST", "/api/v1/users/{user_id}/unlock"): frozenset({A}),
    ("POST", "/api/v1/patients"): frozenset({F}),
    ("GET", "/api/v1/patients"): frozenset({F, N, P}),
    ("GET", "/api/v1/patients/{patient_id}"): frozenset({F, N, P}),
    ("PATCH", "/api/v1/patients/{patient_id}"): frozenset({F}),
    ("GET", "/api/v1/patients/{patient_id}/weights"): frozenset({F, N, P}),
    ("POST", "/api/v1/patients/{patient_id}/weights"): frozenset({N, P}),
    ("GET", "/api/v1/audit/verify"): frozenset({A}),
    ("GET", "/api/v1/audit/records"): frozenset({A}),
    ("WS", "/api/v1/sessions/{session_id}/stream"): frozenset({N, P}),
    # Last: it ends the session used to call it.
    ("POST", "/api/v1/auth/logout"): ALL,
}
KioskOnItsSession = Annotated[Principal, require(Role.KIOSK, session_param="session_id")]
DOC_PATHS: Final = {"/api/v1/openapi.json", "/api/v1/docs"}


def _concrete(path: str) -> str:
    return re.sub(r"\{[a-z_]+\}", "1", path)


def _declared(app: FastAPI) -> dict[tuple[str, str], frozenset[Role] | None]:
    declared: dict[tuple[str, str], frozenset[Role] | None] = {}
    for route in served_routes(app):
        if not route.is_api:
            assert route.path in DOC_PATHS, f"unexpected non-API route {route.path}"
            continue
        assert len(route.requirements) <= 1, route.path
        roles = route.requirements[0].roles if route.requirements else None
        for method in route.methods:
            declared[(method, route.path)] = roles
    return declared


def test_the_table_lists_every_route_and_matches_each_declaration(app: FastAPI) -> None:
    assert _declared(app) == EXPECTED


def test_the_table_matches_the_openapi_document(client: TestClient) -> None:
    document = client.get("/api/v1/openapi.json").json()
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert documented == {key for key in EXPECTED if key[0] != "WS"}


def test_public_routes_are_exactly_health_login_and_the_api_description() -> None:
    public = {path for (_, path), roles in EXPECTED.items() if roles is None}
    assert public | DOC_PATHS == PUBLIC_PATHS


def _call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> int:
    if method == "WS":
        try:
            with client.websocket_connect(_concrete(path), headers=headers) as ws:
                assert ws.receive_json()["type"] == "stream.opened"
                return 101
        except WebSocketDenialResponse as denial:
            return denial.status_code
    return client.request(method, _concrete(path), headers=headers).status_code


PROTECTED = [key for key, roles in EXPECTED.items() if roles is not None]


def test_every_protected_route_answers_401_without_credentials(client: TestClient) -> None:
    statuses = {key: _call(client, *key, headers={}) for key in PROTECTED}
    assert statuses == dict.fromkeys(PROTECTED, 401)
    bad = {key: _call(client, *key, headers={"Authorization": "Bearer nope"}) for key in PROTECTED}
    assert bad == dict.fromkeys(PROTECTED, 401)


def test_401_uses_the_error_shape_and_asks_for_a_bearer_token(client: TestClient) -> None:
    response = client.get("/api/v1/patients/1")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize("role", list(Role))
def test_each_role_is_refused_exactly_where_the_table_says(
    client: TestClient, auth_headers: Callable[..., dict[str, str]], role: Role
) -> None:
    headers = auth_headers(role)
    outcome = {key: _call(client, *key, headers=headers) for key in PROTECTED}
    refused = {key for key, status in outcome.items() if status == 403}
    expected_refused = {key for key in PROTECTED if role not in (EXPECTED[key] or ALL)}
    assert refused == expected_refused
    assert 401 not in outcome.values()  # the token stayed valid until the final logout


def test_a_kiosk_token_may_act_only_on_its_own_session(
    app: FastAPI, client: TestClient, auth_headers: Callable[..., dict[str, str]]
) -> None:
    @app.get("/api/v1/test-only/sessions/{session_id}/checkins")
    def checkins(session_id: int, principal: KioskOnItsSession) -> dict[str, int | None]:
        return {"bound": principal.bound_session_id}

    kiosk = auth_headers(Role.KIOSK, bound_session_id=7)
    assert client.get("/api/v1/test-only/sessions/7/checkins", headers=kiosk).json() == {"bound": 7}
    other = client.get("/api/v1/test-only/sessions/8/checkins", headers=kiosk)
    assert other.status_code == 403
    assert "another infusion session" in other.json()["error"]["message"]
    nurse = client.get("/api/v1/test-only/sessions/7/checkins", headers=auth_headers(Role.NURSE))
    assert nurse.status_code == 403


def test_an_app_with_an_unguarded_route_is_refused(app: FastAPI) -> None:
    @app.get("/api/v1/forgotten")
    def forgotten() -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="exactly one require"):
        check_authorisation_declared(app)


def test_websocket_refused_for_wrong_role_with_the_error_shape(
    client: TestClient, auth_headers: Callable[..., dict[str, str]]
) -> None:
    with (
        pytest.raises(WebSocketDenialResponse) as denial,
        client.websocket_connect(
            "/api/v1/sessions/1/stream", headers=auth_headers(Role.FRONT_DESK)
        ),
    ):
        pass
    assert denial.value.status_code == 403
    assert denial.value.json()["error"]["code"] == "forbidden"
