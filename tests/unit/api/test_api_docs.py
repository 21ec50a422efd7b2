"""docs/service.md is complete: every endpoint, service command, role and setting is in it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI

from ketaflow.api.app import served_routes
from ketaflow.api.errors import STATUS_BY_ERROR
from ketaflow.store.types import Role

DOC = Path(__file__).resolve().parents[3] / "docs" / "service.md"
SERVICE_COMMANDS = [
    "ketaflow serve",
    "ketaflow db upgrade",
    "ketaflow users add",
    "ketaflow audit verify",
]
SERVICE_SETTINGS = [
    "data_dir",
    "database_url",
    "session_ttl_min",
    "session_idle_timeout_min",
    "max_failed_logins",
    "lockout_min",
]


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_every_route_is_documented(app: FastAPI, doc: str) -> None:
    missing = sorted({r.path for r in served_routes(app) if f"`{r.path}" not in doc})
    assert missing == []


@pytest.mark.parametrize("command", SERVICE_COMMANDS)
def test_every_service_command_is_documented(doc: str, command: str) -> None:
    assert f"`{command}" in doc


@pytest.mark.parametrize("role", list(Role))
def test_every_role_is_documented(doc: str, role: Role) -> None:
    assert f"| `{role.value}` |" in doc


@pytest.mark.parametrize("setting", SERVICE_SETTINGS)
def test_every_setting_the_service_uses_is_documented(doc: str, setting: str) -> None:
    assert f"`KETAFLOW_{setting.upper()}`" in doc


@pytest.mark.parametrize("error_class", [cls for cls, _ in STATUS_BY_ERROR])
def test_every_error_code_is_documented(doc: str, error_class: type) -> None:
    assert f"`{error_class.code}`" in doc
