"""The packaged Alembic migrations: they build exactly the models' schema, on both databases."""

from __future__ import annotations

from importlib import resources

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select

from ketaflow.store.migrate import current_revision, downgrade, head_revision, upgrade
from ketaflow.store.tables import GENESIS_HASH, AuditChainHead, Base


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []


def test_database_is_at_the_packaged_head_and_upgrade_is_idempotent(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    assert upgrade(engine) == head_revision()
    assert current_revision(engine) == head_revision()


def test_every_model_table_exists(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_audit_chain_head_is_seeded_at_genesis(engine: Engine) -> None:
    with engine.connect() as conn:
        head = conn.execute(select(AuditChainHead.__table__)).one()
    assert (head.id, head.last_seq, head.last_hash) == (1, 0, GENESIS_HASH)


def test_downgrade_to_base_drops_everything_and_upgrade_rebuilds_it(engine: Engine) -> None:
    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert not set(Base.metadata.tables) & set(inspect(engine).get_table_names())
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())


def test_migrations_ship_inside_the_package() -> None:
    migrations = resources.files("ketaflow.store") / "migrations"
    assert (migrations / "env.py").is_file()
    assert (migrations / "script.py.mako").is_file()
    assert (migrations / "versions" / "__init__.py").is_file()  # a package: found by setuptools
    assert (migrations / "versions" / "0001_initial.py").is_file()
