"""Engine and session factories. Nothing here runs at import time.

SQLite (the default, a file in ``settings.data_dir``) is set up for a small clinic server:

- ``journal_mode=WAL`` so readers never block the writer;
- ``foreign_keys=ON`` (SQLite leaves them off unless asked, per connection);
- ``busy_timeout`` so a writer waits for the lock instead of failing at once;
- ``synchronous=FULL`` so a committed transaction survives a power cut, not only a crash;
- every transaction starts with ``BEGIN IMMEDIATE``: a unit of work that reads and then writes
  (every patient read also appends an audit record) takes the write lock up front, instead of
  failing with "database is locked" when it tries to upgrade a stale read snapshot;
- writers of this process queue for a lock of our own before ``BEGIN IMMEDIATE`` and leave it
  once their COMMIT is done. Without it, threads that find SQLite's lock taken wait in SQLite's
  busy handler, which sleeps with back-off (up to 100 ms a retry): under 100 requests/s that
  turned brief contention into stalls of up to 1.7 s (``benchmarks/bench_ingest.py``). Other
  processes (the CLI) still meet SQLite's own lock and busy timeout.

PostgreSQL is used when ``settings.database_url`` (``KETAFLOW_DATABASE_URL``) names it; the
psycopg 3 driver is always used (``postgresql://`` is rewritten to ``postgresql+psycopg://``).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from ketaflow.config import Settings
from ketaflow.errors import InputError, StorageError

#: How long a SQLite writer waits for another writer's lock before giving up, milliseconds.
SQLITE_BUSY_TIMEOUT_MS: Final[int] = 10_000
#: Key in ``Connection.info`` marking a connection that holds this process's SQLite write slot.
_WRITE_LOCK_HELD: Final[str] = "ketaflow_sqlite_write_lock"

_SUPPORTED = "sqlite:///<path> or postgresql+psycopg://user@host:port/db"


def database_url(settings: Settings) -> URL:
    """The validated database URL for ``settings`` (SQLite in ``data_dir`` by default).

    Raises :class:`~ketaflow.errors.InputError` (field ``database_url``) for a URL that cannot
    be parsed or names a database other than SQLite or PostgreSQL.
    """
    raw = settings.resolved_database_url()
    try:
        url = make_url(raw)
    except ArgumentError:
        raise InputError(
            f"database_url must look like {_SUPPORTED}; got a value that is not a URL. "
            "Set KETAFLOW_DATABASE_URL or pass --database.",
            field="database_url",
        ) from None
    backend = url.get_backend_name()
    if backend == "postgresql":
        if url.drivername not in ("postgresql", "postgresql+psycopg"):
            raise InputError(
                f"database_url must use the psycopg 3 driver (postgresql+psycopg://); "
                f"got driver {url.drivername!r}.",
                field="database_url",
            )
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if url.drivername != "sqlite":
            raise InputError(
                f"database_url for SQLite must start with sqlite:///; got {url.drivername!r}.",
                field="database_url",
            )
        return url
    raise InputError(
        f"database_url must be {_SUPPORTED}; got a {backend!r} URL.", field="database_url"
    )


def make_engine(settings: Settings) -> Engine:
    """Create the engine for ``settings``; creates the SQLite file's directory when needed.

    The engine connects lazily: creating it touches no database. Call
    :func:`ketaflow.store.migrate.upgrade` to create or update the schema.
    """
    url = database_url(settings)
    if url.get_backend_name() == "sqlite":
        return _make_sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True)


def _make_sqlite_engine(url: URL) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if in_memory:
        # One shared connection, or every checkout would see a different empty database.
        kwargs["poolclass"] = StaticPool
    else:
        Path(str(url.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # Take BEGIN away from the sqlite3 module; the "begin" hook below emits our own.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    write_lock = threading.Lock()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if not write_lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise StorageError(
                "the database is busy: no write slot within "
                f"{SQLITE_BUSY_TIMEOUT_MS / 1000:g} s; try again"
            )
        connection.info[_WRITE_LOCK_HELD] = True
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            connection.info.pop(_WRITE_LOCK_HELD, None)
            write_lock.release()
            raise

    @event.listens_for(engine, "commit")
    def _on_commit(connection: Any) -> None:
        if not connection.info.get(_WRITE_LOCK_HELD):
            return
        # SQLAlchemy dispatches this event before its own COMMIT; commit here so that the next
        # writer is let in only once this transaction is durable (SQLAlchemy's COMMIT that
        # follows is then a no-op: the sqlite3 module is in autocommit mode, see above). If this
        # COMMIT fails, the lock stays held until the rollback that follows releases it.
        connection.connection.dbapi_connection.execute("COMMIT")
        connection.info.pop(_WRITE_LOCK_HELD, None)
        write_lock.release()

    @event.listens_for(engine, "rollback")
    def _on_rollback(connection: Any) -> None:
        if connection.info.pop(_WRITE_LOCK_HELD, False):
            write_lock.release()

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``. Objects stay readable after commit (no expiry)."""
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)
