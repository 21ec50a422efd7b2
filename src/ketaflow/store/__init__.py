"""Persistence: tables, engine, repositories, the unit of work, the audit chain, migrations.

Repositories never commit; :class:`UnitOfWork` is the only place that does. Nothing is built at
import time: call :func:`make_engine` and :func:`make_session_factory` with the settings.
"""

from __future__ import annotations

from ketaflow.store.audit import AuditEntry, ChainVerification, verify_chain
from ketaflow.store.db import make_engine, make_session_factory
from ketaflow.store.errors import ConflictError
from ketaflow.store.migrate import upgrade
from ketaflow.store.types import Role, Sex
from ketaflow.store.uow import UnitOfWork

__all__ = [
    "AuditEntry",
    "ChainVerification",
    "ConflictError",
    "Role",
    "Sex",
    "UnitOfWork",
    "make_engine",
    "make_session_factory",
    "upgrade",
    "verify_chain",
]
