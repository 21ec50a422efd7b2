"""Alembic environment for ketaflow.

There is no ``alembic.ini``: :mod:`ketaflow.store.migrate` builds the configuration in code and
hands over an open connection in ``config.attributes["connection"]``, so migrations work the
same from a source checkout and from an installed package.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from ketaflow.store.tables import Base

#: Any constant works; it only has to be the same for every ketaflow process.
_PG_MIGRATION_LOCK_KEY = 0x6B657461


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "run migrations with `ketaflow db upgrade` (ketaflow.store.migrate), "
            "which supplies the database connection"
        )
    if connection.dialect.name == "postgresql":
        # Two servers starting at once must not both apply the same revision.
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY}
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


_run()
