"""Database errors translated into the ketaflow error tree.

Driver messages quote the offending values (an MRN, a name), so they are never passed on:
the translated message names the table and column only.
"""

from __future__ import annotations

import re

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError

from ketaflow.errors import ConflictError, KetaflowError, StorageError

__all__ = ["ConflictError", "translate_db_error"]


# SQLite: "UNIQUE constraint failed: patients.mrn"
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (\w+)\.(\w+)")
# Our naming convention: uq_<table>_<column>
_UNIQUE_NAME = re.compile(r"uq_([a-z_]+?)_([a-z0-9_]+)$")


def _unique_target(exc: IntegrityError) -> tuple[str, str] | None:
    match = _SQLITE_UNIQUE.search(str(exc.orig))
    if match:
        return match.group(1), match.group(2)
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    table = getattr(diag, "table_name", None)
    if isinstance(name, str) and isinstance(table, str) and name.startswith(f"uq_{table}_"):
        return table, name.removeprefix(f"uq_{table}_")
    if isinstance(name, str):
        by_name = _UNIQUE_NAME.match(name)
        if by_name:
            return by_name.group(1), by_name.group(2)
    return None


def translate_db_error(exc: SQLAlchemyError) -> KetaflowError | None:
    """The ketaflow error for a database error, or None when it is a programming error."""
    if isinstance(exc, IntegrityError):
        target = _unique_target(exc)
        if target is not None:
            table, column = target
            return ConflictError(
                f"{column} must be unique in {table}; another record already has this value. "
                "Look up the existing record instead of creating a second one.",
                field=column,
            )
        return ConflictError(
            "the change conflicts with existing records (a database constraint refused it).",
        )
    if isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return StorageError(
            "the database is unavailable or busy; the change was not saved. Try again; if it "
            "persists, check that the database server is running and reachable."
        )
    return None
