"""Repositories: data access on a caller's :class:`~sqlalchemy.orm.Session`.

A repository reads and writes rows inside the transaction it is given and never commits or
rolls back: :class:`~ketaflow.store.uow.UnitOfWork` owns the transaction. ``add`` methods flush
so that generated ids are available at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ketaflow.store.tables import LoginSession, Patient, User, WeightMeasurement
from ketaflow.store.types import Role


class UserRepository:
    """Staff accounts."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, user: User) -> User:
        """Insert ``user`` and assign its id."""
        self._session.add(user)
        self._session.flush()
        return user

    def get(self, user_id: int) -> User | None:
        """The user with ``user_id``, or None."""
        return self._session.get(User, user_id)

    def get_by_username(self, username: str) -> User | None:
        """The user named ``username`` (already normalised to lower case), or None."""
        return self._session.execute(
            select(User).where(User.username == username)
        ).scalar_one_or_none()

    def list_all(self) -> Sequence[User]:
        """Every user, by id."""
        return self._session.execute(select(User).order_by(User.id)).scalars().all()

    def count_active(self, role: Role) -> int:
        """How many active accounts have ``role``."""
        return self._session.execute(
            select(func.count()).select_from(User).where(User.role == role, User.active)
        ).scalar_one()


class LoginSessionRepository:
    """Signed-in sessions and kiosk tokens, looked up by token hash."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, login_session: LoginSession) -> LoginSession:
        """Insert ``login_session`` and assign its id."""
        self._session.add(login_session)
        self._session.flush()
        return login_session

    def get(self, login_session_id: int) -> LoginSession | None:
        """The login session with ``login_session_id``, or None."""
        return self._session.get(LoginSession, login_session_id)

    def get_by_token_hash(self, token_hash: str) -> LoginSession | None:
        """The login session whose token hashes to ``token_hash``, or None."""
        return self._session.execute(
            select(LoginSession).where(LoginSession.token_hash == token_hash)
        ).scalar_one_or_none()

    def revoke_for_user(
        self,
        user_id: int,
        *,
        at: datetime,
        keep_id: int | None = None,
        include_kiosk: bool = True,
    ) -> int:
        """Revoke the live sessions of ``user_id`` and return how many.

        ``include_kiosk`` also revokes the kiosk tokens the user issued; ``keep_id`` spares one
        session (the one asking).
        """
        query = update(LoginSession).where(
            LoginSession.user_id == user_id, LoginSession.revoked.is_(False)
        )
        if keep_id is not None:
            query = query.where(LoginSession.id != keep_id)
        if not include_kiosk:
            query = query.where(LoginSession.bound_session_id.is_(None))
        result = self._session.execute(
            query.values(revoked=True, revoked_at=at).execution_options(synchronize_session="fetch")
        )
        return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True, slots=True)
class PatientPage:
    """One page of a patient search, with the total number of matches."""

    items: Sequence[Patient]
    total: int


class PatientRepository:
    """Patients and their weight measurements."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, patient: Patient) -> Patient:
        """Insert ``patient`` and assign its id."""
        self._session.add(patient)
        self._session.flush()
        return patient

    def get(self, patient_id: int) -> Patient | None:
        """The patient with ``patient_id``, or None."""
        return self._session.get(Patient, patient_id)

    def get_by_mrn(self, mrn: str) -> Patient | None:
        """The patient with medical record number ``mrn``, or None."""
        return self._session.execute(select(Patient).where(Patient.mrn == mrn)).scalar_one_or_none()

    def search(
        self,
        *,
        name_prefix: str | None = None,
        mrn: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> PatientPage:
        """Patients whose family or given name starts with ``name_prefix`` (any case) and/or
        whose MRN equals ``mrn``, ordered by family name, given name and id."""
        query = select(Patient)
        if name_prefix:
            prefix = name_prefix.lower()
            query = query.where(
                func.lower(Patient.family_name).startswith(prefix, autoescape=True)
                | func.lower(Patient.given_name).startswith(prefix, autoescape=True)
            )
        if mrn:
            query = query.where(Patient.mrn == mrn)
        total = self._session.execute(
            select(func.count()).select_from(query.subquery())
        ).scalar_one()
        items = (
            self._session.execute(
                query.order_by(Patient.family_name, Patient.given_name, Patient.id)
                .limit(limit)
                .offset(offset)
            )
            .scalars()
            .all()
        )
        return PatientPage(items=items, total=total)

    def add_weight(self, weight: WeightMeasurement) -> WeightMeasurement:
        """Insert a weight measurement and assign its id."""
        self._session.add(weight)
        self._session.flush()
        return weight

    def weights(self, patient_id: int) -> Sequence[WeightMeasurement]:
        """The patient's weights, oldest first (by day measured, then by entry)."""
        return (
            self._session.execute(
                select(WeightMeasurement)
                .where(WeightMeasurement.patient_id == patient_id)
                .order_by(WeightMeasurement.measured_on, WeightMeasurement.id)
            )
            .scalars()
            .all()
        )

    def latest_weight(self, patient_id: int) -> WeightMeasurement | None:
        """The most recent weight (latest day measured, then latest entry), or None."""
        return self._session.execute(
            select(WeightMeasurement)
            .where(WeightMeasurement.patient_id == patient_id)
            .order_by(WeightMeasurement.measured_on.desc(), WeightMeasurement.id.desc())
            .limit(1)
        ).scalar_one_or_none()
