"""Run the Alembic migrations shipped in the package, without an ``alembic.ini``.

``ketaflow db upgrade`` and the server's startup call :func:`upgrade`. Developers adding a table
create a revision with :func:`new_revision` (see docs/service.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ketaflow.errors import StorageError
from ketaflow.store.errors import translate_db_error

#: Where the revisions live, as a package resource (works from a wheel or a checkout).
SCRIPT_LOCATION = "ketaflow.store:migrations"


def alembic_config() -> Config:
    """An Alembic configuration pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("path_separator", "os")
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of ketaflow."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations are packaged with ketaflow")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Bring the database up to ``revision`` (default: the newest); returns the revision.

    Idempotent: on an up-to-date database it only checks the version. Raises
    :class:`~ketaflow.errors.StorageError` when the database cannot be reached.
    """
    _run(engine, lambda config: command.upgrade(config, revision))
    return current_revision(engine) or "base"


def downgrade(engine: Engine, revision: str) -> None:
    """Step the database back to ``revision`` (``"base"`` drops every table: tests only)."""
    _run(engine, lambda config: command.downgrade(config, revision))


def new_revision(engine: Engine, message: str, *, autogenerate: bool = True) -> None:
    """Write a new revision file comparing the models with ``engine``'s (up-to-date) schema."""
    _run(engine, lambda config: command.revision(config, message, autogenerate=autogenerate))


def _run(engine: Engine, action: Callable[[Config], Any]) -> None:
    config = alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            action(config)
    except SQLAlchemyError as exc:
        translated = translate_db_error(exc)
        if translated is not None:
            raise translated from exc
        raise StorageError(
            "the database migration failed; the schema was left unchanged. "
            "Run `ketaflow --debug db upgrade` for the details."
        ) from exc
