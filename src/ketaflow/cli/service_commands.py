"""Service commands: ``serve``, ``db upgrade``, ``users add``, ``audit verify``.

Each command works on the database of the settings (``KETAFLOW_DATABASE_URL``, default SQLite in
``KETAFLOW_DATA_DIR``), or the one given with ``--database``. Results go to stdout, messages to
stderr; bad input is one line on stderr and exit 2 (see :mod:`ketaflow.cli.main`).
"""

from __future__ import annotations

import getpass
import logging
import re
import sys
from typing import Annotated

import typer
from sqlalchemy import Engine

from ketaflow.config import Settings
from ketaflow.errors import InputError, StorageError
from ketaflow.services.auth import Authenticator, AuthPolicy, normalise_username
from ketaflow.services.clock import SystemClock
from ketaflow.services.users import UserService, account_role
from ketaflow.store.audit import verify_chain
from ketaflow.store.db import database_url, make_engine, make_session_factory
from ketaflow.store.migrate import current_revision, upgrade
from ketaflow.store.types import Role
from ketaflow.store.uow import UnitOfWork

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="Database URL (sqlite:///path or postgresql+psycopg://...); "
        "default: KETAFLOW_DATABASE_URL, else SQLite in KETAFLOW_DATA_DIR.",
        show_default=False,
    ),
]


_ACCOUNT_ROLES = tuple(r for r in Role if r is not Role.KIOSK)


def _settings(database: str | None) -> Settings:
    settings = Settings()
    if database is not None:
        if not database.strip():
            raise InputError("--database must be a database URL; got an empty value.")
        settings = settings.model_copy(update={"database_url": database.strip()})
    database_url(settings)  # validate now: one clear line instead of a driver error later
    return settings


def _shown_url(settings: Settings) -> str:
    return database_url(settings).render_as_string(hide_password=True)


def _require_schema(engine: Engine) -> None:
    if current_revision(engine) is None:
        raise StorageError(
            "the database has no ketaflow tables yet; run `ketaflow db upgrade` first."
        )


def _cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown"


class _RedactTokens(logging.Filter):
    """Remove ``token=...`` from server log lines (live-stream URLs carry the session token)."""

    _pattern = re.compile(r"(token=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = self._pattern.sub(r"\1[redacted]", message), ()
        return True


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (1-65535).")] = 8000,
    database: DatabaseOption = None,
) -> None:
    """Run the API server (migrating the database first)."""
    import uvicorn

    if not 1 <= port <= 65535:
        raise InputError(f"--port must be in [1, 65535]; got {port}.", field="port")
    # The API and the clinician web app, served together (composed here because api and web
    # are independent layers).
    from ketaflow.cli.demo import create_clinic_app

    settings = _settings(database)
    engine = make_engine(settings)
    try:
        revision = upgrade(engine)
    finally:
        engine.dispose()
    typer.echo(
        f"ketaflow: database {_shown_url(settings)} at revision {revision}; "
        f"web app at http://{host}:{port}/login, API docs at http://{host}:{port}/api/v1/docs",
        err=True,
    )
    config = uvicorn.Config(
        create_clinic_app(settings, migrate_on_startup=False),
        host=host,
        port=port,
        log_level="info",
        server_header=False,
    )
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(_RedactTokens())
    uvicorn.Server(config).run()


def db_upgrade(database: DatabaseOption = None) -> None:
    """Create or update the database schema to this version of ketaflow."""
    settings = _settings(database)
    engine = make_engine(settings)
    try:
        revision = upgrade(engine)
    finally:
        engine.dispose()
    typer.echo(f"database {_shown_url(settings)} at revision {revision}")


def users_add(
    username: Annotated[str, typer.Argument(help="Login name (lower case).")],
    role: Annotated[
        str,
        typer.Option("--role", help=f"Account role: {', '.join(r.value for r in _ACCOUNT_ROLES)}."),
    ],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin (one line).")
    ] = False,
    database: DatabaseOption = None,
) -> None:
    """Create a staff account (the database is migrated first)."""
    account = account_role(role.strip().lower())
    name = normalise_username(username)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InputError("--password-stdin: no password on stdin.", field="password")
    else:
        try:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        except typer.Abort:
            raise InputError(
                "no password was entered; in scripts use --password-stdin.", field="password"
            ) from None
    settings = _settings(database)
    engine = make_engine(settings)
    try:
        upgrade(engine)
        clock = SystemClock()
        auth = Authenticator(AuthPolicy.from_settings(settings), clock)
        with UnitOfWork(make_session_factory(engine)) as uow:
            user = UserService(uow, auth, clock).create(
                _cli_actor(), username=name, password=password, role=account
            )
    finally:
        engine.dispose()
    typer.echo(f"created user {user.username} (id {user.id}, role {user.role.value})")


def audit_verify(database: DatabaseOption = None) -> None:
    """Check the audit log's hash chain; exit 1 naming the first broken record."""
    settings = _settings(database)
    engine = make_engine(settings)
    try:
        _require_schema(engine)
        with UnitOfWork(make_session_factory(engine)) as uow:
            result = verify_chain(uow.session)
    finally:
        engine.dispose()
    if not result.ok:
        where = "" if result.first_broken_seq is None else f" at record {result.first_broken_seq}"
        typer.echo(f"ketaflow: audit chain broken{where}: {result.reason}", err=True)
        raise typer.Exit(1)
    typer.echo(f"audit chain intact: {result.n_records} records")


def register(app: typer.Typer) -> None:
    """Attach the service commands to ``app``."""
    app.command("serve")(serve)

    db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
    db_app.command("upgrade")(db_upgrade)
    app.add_typer(db_app, name="db")

    users_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
    users_app.command("add")(users_add)
    app.add_typer(users_app, name="users")

    audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
    audit_app.command("verify")(audit_verify)
    app.add_typer(audit_app, name="audit")
