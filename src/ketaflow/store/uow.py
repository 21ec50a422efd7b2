"""The unit of work: one transaction, and the only place that commits or rolls back.

Usage::

    with UnitOfWork(session_factory) as uow:
        patient = uow.patients.add(Patient(...))
        uow.audit.record(ts=now, actor="user:3:alice", action="create",
                         entity="patient", entity_id=patient.id)
    # leaving the block normally commits: the audit entries are chained, then COMMIT;
    # leaving it with an exception rolls everything back, audit entries included.

``uow.commit()`` may be called inside the block to keep work that must survive an error raised
afterwards (a failed sign-in counts against the account even though the request fails).
Callbacks registered with :meth:`UnitOfWork.after_commit` run only once the data is durable,
which is where live events are published.

Database errors leave the block translated: a duplicate unique value as
:class:`~ketaflow.store.errors.ConflictError`, an unreachable or locked database as
:class:`~ketaflow.errors.StorageError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ketaflow.store.audit import AuditTrail
from ketaflow.store.errors import translate_db_error
from ketaflow.store.repositories import (
    LoginSessionRepository,
    PatientRepository,
    UserRepository,
)

_log = logging.getLogger(__name__)


class UnitOfWork:
    """One database transaction with its repositories and audit trail.

    Attributes (available inside the ``with`` block): ``session``, ``users``,
    ``login_sessions``, ``patients``, ``audit``. New entities add their repository here.
    """

    session: Session
    users: UserRepository
    login_sessions: LoginSessionRepository
    patients: PatientRepository
    audit: AuditTrail

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory
        self._after_commit: list[Callable[[], None]] = []
        self._open = False

    def __enter__(self) -> Self:
        if self._open:
            raise RuntimeError("a UnitOfWork cannot be entered twice; create a new one")
        self.session = self._session_factory()
        self.users = UserRepository(self.session)
        self.login_sessions = LoginSessionRepository(self.session)
        self.patients = PatientRepository(self.session)
        self.audit = AuditTrail(self.session)
        self._open = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                self.commit()
            else:
                self.rollback()
        finally:
            self.session.close()
            self._open = False
        if isinstance(exc, SQLAlchemyError):
            translated = translate_db_error(exc)
            if translated is not None:
                raise translated from exc

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after the next successful commit (never after a rollback)."""
        self._after_commit.append(callback)

    def commit(self) -> None:
        """Chain the pending audit entries and commit; then run the after-commit callbacks."""
        self._require_open()
        try:
            self.audit.flush()
            self.session.commit()
        except SQLAlchemyError as exc:
            self.rollback()
            translated = translate_db_error(exc)
            if translated is not None:
                raise translated from exc
            raise
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                # The data is committed; a failing notification must not turn that into an
                # error response. It is logged for follow-up.
                _log.exception("after-commit callback failed")

    def rollback(self) -> None:
        """Discard the transaction, its pending audit entries and after-commit callbacks."""
        self._require_open()
        self.audit.discard()
        self._after_commit.clear()
        self.session.rollback()

    def _require_open(self) -> None:
        if not self._open:
            raise RuntimeError("use the UnitOfWork inside its `with` block")
