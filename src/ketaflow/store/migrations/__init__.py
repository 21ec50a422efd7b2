"""Alembic migrations of the service database (run with ``ketaflow db upgrade``)."""
