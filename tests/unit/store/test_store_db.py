"""Engine factory: SQLite pragmas and location, URL validation."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from ketaflow.config import Settings
from ketaflow.errors import InputError
from ketaflow.store.db import (
    SQLITE_BUSY_TIMEOUT_MS,
    database_url,
    make_engine,
    make_session_factory,
)
from ketaflow.store.migrate import upgrade
from ketaflow.store.tables import User
from ketaflow.store.types import Role
from ketaflow.store.uow import UnitOfWork


def test_sqlite_defaults_to_a_file_in_data_dir_created_on_first_run(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "yet"
    engine = make_engine(Settings(data_dir=data_dir))
    try:
        assert data_dir.is_dir()  # created by the factory, without connecting
        assert not (data_dir / "ketaflow.sqlite3").exists()
        upgrade(engine)
        assert (data_dir / "ketaflow.sqlite3").is_file()
    finally:
        engine.dispose()


def test_sqlite_connections_use_wal_foreign_keys_busy_timeout_and_full_sync(
    tmp_path: Path,
) -> None:
    engine = make_engine(Settings(data_dir=tmp_path))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        engine.dispose()


def test_sqlite_enforces_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(Settings(data_dir=tmp_path))
    upgrade(engine)
    try:
        with pytest.raises(Exception, match="FOREIGN KEY"), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO weight_measurements (patient_id, weight_kg, measured_on, "
                    "recorded_at) VALUES (999, 70, '2025-01-01', '2025-01-01 00:00:00')"
                )
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.sqlite3", "sqlite:////tmp/x.sqlite3"),
    ],
)
def test_database_url_accepts_sqlite_and_postgresql_with_psycopg3(raw: str, expected: str) -> None:
    assert database_url(Settings(database_url=raw)).render_as_string() == expected


def test_database_url_default_is_sqlite_under_data_dir(tmp_path: Path) -> None:
    url = database_url(Settings(data_dir=tmp_path))
    assert url.drivername == "sqlite"
    assert url.database == str((tmp_path / "ketaflow.sqlite3").resolve())


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("not a url", "not a URL"),
        ("mysql://u@h/db", "'mysql'"),
        ("postgresql+psycopg2://u@h/db", "psycopg 3"),
        ("sqlite+pysqlcipher:///x", "sqlite:///"),
    ],
)
def test_database_url_refuses_other_databases_naming_the_setting(raw: str, fragment: str) -> None:
    with pytest.raises(InputError, match="database_url") as info:
        database_url(Settings(database_url=raw))
    assert fragment in info.value.message
    assert info.value.field == "database_url"


def test_naive_timestamps_are_refused(tmp_path: Path) -> None:
    engine = make_engine(Settings(data_dir=tmp_path))
    upgrade(engine)
    naive = datetime(2025, 1, 1, 12, 0)
    try:
        with (
            pytest.raises(Exception, match="timezone-aware"),
            UnitOfWork(make_session_factory(engine)) as uow,
        ):
            uow.users.add(
                User(
                    username="nurse1",
                    password_hash="x",
                    role=Role.NURSE,
                    created_at=naive,
                    updated_at=naive,
                )
            )
    finally:
        engine.dispose()
