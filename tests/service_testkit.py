"""Fixtures for the service tests: store, services, API and integration.

Every test that uses ``database_url`` (directly or through ``settings``, ``engine``,
``session_factory``, ``app``, ``client`` ...) runs twice: on a fresh SQLite file and on a fresh
PostgreSQL schema. PostgreSQL runs are skipped only when KETAFLOW_TEST_POSTGRES_URL is unset.

- SQLite: a database migrated once per session is copied for each test (isolated, ~1 ms).
- PostgreSQL: each test gets its own schema (``search_path`` set in the URL), migrated with the
  real migrations and dropped afterwards, so tests never see each other's rows and several
  test runs can share one server.

The conftest.py files of the service test folders re-export these fixtures.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ketaflow.api import create_app
from ketaflow.api.deps import AppContext
from ketaflow.config import Settings
from ketaflow.services.auth import Authenticator, AuthPolicy
from ketaflow.services.clock import ManualClock
from ketaflow.services.users import UserService, UserView
from ketaflow.store.db import make_engine, make_session_factory
from ketaflow.store.migrate import upgrade
from ketaflow.store.types import Role
from ketaflow.store.uow import UnitOfWork

#: Argon2 with the cheapest parameters: still real Argon2id, ~1 ms instead of ~50 ms per hash.
FAST_HASHER = PasswordHasher.from_parameters(CHEAPEST)
#: The tests' "now": a Saturday morning in March, UTC.
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

__all__ = [
    "FAST_HASHER",
    "PASSWORD",
    "T0",
    "app",
    "auth",
    "auth_headers",
    "client",
    "clock",
    "context",
    "database_url",
    "engine",
    "ensure_infusion_sessions",
    "make_uow",
    "make_user",
    "pg_schema",
    "pg_server_url",
    "session_factory",
    "settings",
    "sqlite_template",
]


def pg_schema_url(server_url: str, schema: str) -> str:
    """``server_url`` with every connection's ``search_path`` set to ``schema``."""
    url = make_url(server_url).set(drivername="postgresql+psycopg")
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


def _libpq_url(server_url: str) -> str:
    return make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated to head once per test session."""
    path = tmp_path_factory.mktemp("template") / "ketaflow.sqlite3"
    engine = make_engine(Settings(database_url=f"sqlite:///{path}"))
    upgrade(engine)
    engine.dispose()  # closes the last connection: the WAL is checkpointed into the file
    return path


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """The PostgreSQL server for tests, or skip."""
    url = os.environ.get("KETAFLOW_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("KETAFLOW_TEST_POSTGRES_URL not set: PostgreSQL tests skipped")
    return url


@pytest.fixture
def pg_schema(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL schema (dropped after the test); yields its URL."""
    schema = f"kf_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq_url(pg_server_url), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield pg_schema_url(pg_server_url, schema)
    finally:
        with psycopg.connect(_libpq_url(pg_server_url), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a fresh, migrated database for one test (SQLite file or PostgreSQL schema)."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "db" / "ketaflow.sqlite3"
        target.parent.mkdir()
        shutil.copyfile(template, target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("pg_schema")
    engine = make_engine(Settings(database_url=url))
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings for a test: its own data directory and database, default session rules."""
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def clock() -> ManualClock:
    """A clock at :data:`T0` that moves only when the test advances it."""
    return ManualClock(T0)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """An engine on the test database, disposed afterwards."""
    engine = make_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions on the test database."""
    return make_session_factory(engine)


@pytest.fixture
def make_uow(session_factory: sessionmaker[Session]) -> Callable[[], UnitOfWork]:
    """``with make_uow() as uow: ...`` opens one transaction on the test database."""
    return lambda: UnitOfWork(session_factory)


@pytest.fixture
def auth(settings: Settings, clock: ManualClock) -> Authenticator:
    """An authenticator with the test clock and fast Argon2."""
    return Authenticator(AuthPolicy.from_settings(settings), clock, FAST_HASHER)


@pytest.fixture
def make_user(
    make_uow: Callable[[], UnitOfWork], auth: Authenticator, clock: ManualClock
) -> Callable[..., UserView]:
    """Create an account (committed): ``make_user(Role.NURSE, username=..., password=...)``."""
    counter = iter(range(1, 1_000_000))

    def _make(role: Role, *, username: str | None = None, password: str = PASSWORD) -> UserView:
        name = username or f"{role.value.replace('_', '')}{next(counter)}"
        with make_uow() as uow:
            return UserService(uow, auth, clock).create(
                "test", username=name, password=password, role=role
            )

    return _make


@pytest.fixture
def app(settings: Settings, clock: ManualClock) -> FastAPI:
    """The API app on the test database, with the test clock and fast Argon2."""
    # No background alarm ticker: tests tick explicitly (tick_alarms_once), deterministically.
    return create_app(
        settings, clock=clock, password_hasher=FAST_HASHER, stream_recheck_s=0.05, alarm_tick_s=0
    )


@pytest.fixture
def context(app: FastAPI) -> AppContext:
    """The app's context (its engine, authenticator, broker...)."""
    ctx = app.state.ketaflow
    assert isinstance(ctx, AppContext)
    return ctx


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """An in-process client; the app's startup (migrations) has run."""
    with TestClient(app) as test_client:
        yield test_client


def ensure_infusion_sessions(session_factory: sessionmaker[Session], up_to_id: int) -> None:
    """Create minimal infusion sessions (patient, screening-free course) until ``up_to_id``
    exists, so that kiosk tokens can be bound to it (the column has a foreign key)."""
    from ketaflow.clinical import Session as DomainSession
    from ketaflow.services.codec import dumps
    from ketaflow.store.tables import Course, InfusionSession, Patient
    from ketaflow.store.types import Sex

    with UnitOfWork(session_factory) as uow:
        db = uow.session
        while (
            db.query(InfusionSession).order_by(InfusionSession.id.desc()).first()
            or InfusionSession(id=0)
        ).id < up_to_id:
            n = db.query(Patient).count() + 1
            patient = Patient(
                mrn=f"KIOSK{n}",
                family_name="Test",
                given_name="Kiosk",
                birth_date=T0.date().replace(year=1980),
                sex=Sex.FEMALE,
                created_at=T0,
                updated_at=T0,
            )
            db.add(patient)
            db.flush()
            course = Course(
                patient_id=patient.id,
                indication="major_depression",
                protocol="depression-standard",
                planned_sessions=6,
                goal_json="{}",
                started_on=T0.date(),
                created_at=T0,
                created_by="test",
            )
            db.add(course)
            db.flush()
            row = InfusionSession(
                course_id=course.id,
                patient_id=patient.id,
                session_number=1,
                chair="1",
                scheduled_for=T0,
                state="scheduled",
                pump_unconfirmed=False,
                snapshot_json="{}",
                version=1,
                created_at=T0,
                updated_at=T0,
            )
            db.add(row)
            db.flush()
            row.snapshot_json = dumps(
                DomainSession(
                    str(row.id), patient.mrn, clock=ManualClock(T0), scheduled_for=T0
                ).snapshot()
            )


@pytest.fixture
def auth_headers(
    client: TestClient, make_user: Callable[..., UserView], context: AppContext
) -> Callable[..., dict[str, str]]:
    """``auth_headers(Role.NURSE)``: Bearer headers of a fresh account with that role.

    ``Role.KIOSK`` gives a kiosk token bound to infusion session ``bound_session_id`` (default 1),
    issued by a fresh nurse.
    """

    def _headers(role: Role, *, bound_session_id: int = 1) -> dict[str, str]:
        issuer_role = Role.NURSE if role is Role.KIOSK else role
        user = make_user(issuer_role)
        response = client.post(
            "/api/v1/auth/login", json={"username": user.username, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        headers = {"Authorization": f"Bearer {response.json()['token']}"}
        client.cookies.clear()  # tests choose their credentials explicitly
        if role is Role.KIOSK:
            ensure_infusion_sessions(context.session_factory, bound_session_id)
            kiosk = client.post(
                "/api/v1/auth/kiosk-tokens",
                json={"infusion_session_id": bound_session_id},
                headers=headers,
            )
            assert kiosk.status_code == 201, kiosk.text
            headers = {"Authorization": f"Bearer {kiosk.json()['token']}"}
        return headers

    return _headers
