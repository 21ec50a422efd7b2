"""Repositories on both databases: lookups, search, ordering, revocation, timestamps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from ketaflow.store.tables import LoginSession, Patient, User, WeightMeasurement
from ketaflow.store.types import Role, Sex
from ketaflow.store.uow import UnitOfWork
from service_testkit import T0

MakeUow = Callable[[], UnitOfWork]


def _user(username: str, role: Role = Role.NURSE, *, active: bool = True) -> User:
    return User(
        username=username,
        password_hash="argon2-hash",
        role=role,
        active=active,
        failed_count=0,
        created_at=T0,
        updated_at=T0,
    )


def _patient(mrn: str, family: str, given: str) -> Patient:
    return Patient(
        mrn=mrn,
        family_name=family,
        given_name=given,
        birth_date=date(1975, 6, 1),
        sex=Sex.UNKNOWN,
        created_at=T0,
        updated_at=T0,
    )


def _login(user_id: int, token_hash: str, bound: int | None = None) -> LoginSession:
    return LoginSession(
        token_hash=token_hash,
        user_id=user_id,
        bound_session_id=bound,
        created_at=T0,
        last_seen_at=T0,
        expires_at=T0 + timedelta(hours=1),
        revoked=False,
    )


def test_users_by_id_name_list_and_active_count(make_uow: MakeUow) -> None:
    with make_uow() as uow:
        a = uow.users.add(_user("admin1", Role.ADMIN))
        uow.users.add(_user("admin2", Role.ADMIN, active=False))
        uow.users.add(_user("nurse1"))
    with make_uow() as uow:
        assert uow.users.get(a.id) is not None
        assert uow.users.get(9999) is None
        found = uow.users.get_by_username("admin1")
        assert found is not None
        assert found.role is Role.ADMIN
        assert [u.username for u in uow.users.list_all()] == ["admin1", "admin2", "nurse1"]
        assert uow.users.count_active(Role.ADMIN) == 1


def test_revoke_for_user_can_spare_one_session_and_kiosk_tokens(make_uow: MakeUow) -> None:
    with make_uow() as uow:
        user = uow.users.add(_user("nurse1"))
        other = uow.users.add(_user("nurse2"))
        keep = uow.login_sessions.add(_login(user.id, "a" * 64))
        uow.login_sessions.add(_login(user.id, "b" * 64))
        kiosk = uow.login_sessions.add(_login(user.id, "c" * 64, bound=7))
        uow.login_sessions.add(_login(other.id, "d" * 64))
    with make_uow() as uow:
        n = uow.login_sessions.revoke_for_user(user.id, at=T0, keep_id=keep.id, include_kiosk=False)
        assert n == 1
    with make_uow() as uow:
        revoked = {
            h: s.revoked for h in "abcd" if (s := uow.login_sessions.get_by_token_hash(h * 64))
        }
        assert revoked == {"a": False, "b": True, "c": False, "d": False}
        assert uow.login_sessions.revoke_for_user(user.id, at=T0) == 2  # a and the kiosk c
        k = uow.login_sessions.get(kiosk.id)
        assert k is not None
        assert k.revoked
        assert k.revoked_at == T0


@pytest.fixture
def five_patients(make_uow: MakeUow) -> None:
    with make_uow() as uow:
        for mrn, family, given in [
            ("M1", "Doe", "Jane"),
            ("M2", "doering", "Alex"),
            ("M3", "Smith", "Dora"),
            ("M4", "Brown", "Sam"),
            ("M5", "D%_x", "Lee"),
        ]:
            uow.patients.add(_patient(mrn, family, given))


@pytest.mark.usefixtures("five_patients")
@pytest.mark.parametrize(
    ("name", "mrn", "expected"),
    [
        ("do", None, ["M1", "M2", "M3"]),  # family or given name, any case
        ("DOE", None, ["M1", "M2"]),
        ("%", None, []),  # LIKE wildcards are literal characters
        ("d%_", None, ["M5"]),
        (None, "M4", ["M4"]),
        ("do", "M3", ["M3"]),
        (None, None, ["M4", "M1", "M2", "M5", "M3"]),  # ordered by family name, then given
    ],
)
def test_patient_search(
    make_uow: MakeUow, name: str | None, mrn: str | None, expected: list[str]
) -> None:
    with make_uow() as uow:
        page = uow.patients.search(name_prefix=name, mrn=mrn)
        assert sorted(p.mrn for p in page.items) == sorted(expected)
        if name is None and mrn is None:
            assert [p.mrn for p in page.items][:1] == ["M4"]
        assert page.total == len(expected)


@pytest.mark.usefixtures("five_patients")
def test_patient_search_pages_report_the_total(make_uow: MakeUow) -> None:
    with make_uow() as uow:
        first = uow.patients.search(limit=2, offset=0)
        rest = uow.patients.search(limit=2, offset=4)
    assert (len(first.items), first.total) == (2, 5)
    assert (len(rest.items), rest.total) == (1, 5)


def test_weights_are_ordered_by_day_then_entry_and_latest_is_the_last(make_uow: MakeUow) -> None:
    with make_uow() as uow:
        p = uow.patients.add(_patient("W1", "Doe", "Jane"))
        for kg, day in [
            (70.0, date(2025, 2, 1)),
            (68.5, date(2025, 1, 1)),
            (69.0, date(2025, 2, 1)),
        ]:
            uow.patients.add_weight(
                WeightMeasurement(patient_id=p.id, weight_kg=kg, measured_on=day, recorded_at=T0)
            )
    with make_uow() as uow:
        assert [w.weight_kg for w in uow.patients.weights(p.id)] == [68.5, 70.0, 69.0]
        latest = uow.patients.latest_weight(p.id)
        assert latest is not None
        assert latest.weight_kg == 69.0
        assert uow.patients.latest_weight(p.id + 1) is None


def test_timestamps_come_back_aware_utc_to_the_microsecond(make_uow: MakeUow) -> None:
    local = datetime(2025, 3, 1, 10, 30, 15, 123456, tzinfo=timezone(timedelta(hours=1)))
    with make_uow() as uow:
        user = _user("nurse1")
        user.locked_until = local
        uow.users.add(user)
    with make_uow() as uow:
        stored = uow.users.get_by_username("nurse1")
        assert stored is not None
        assert stored.locked_until == local
        assert stored.locked_until is not None
        assert stored.locked_until.tzinfo == UTC
        assert stored.locked_until.hour == 9
        assert stored.locked_until.microsecond == 123456
