"""Account administration: creation rules, role changes, last-admin guard, resets, unlock."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from sqlalchemy import select

from ketaflow.errors import InputError, NotFoundError, StateError
from ketaflow.services.auth import AuthenticationError, Authenticator
from ketaflow.services.clock import ManualClock
from ketaflow.services.users import UserService, UserView
from ketaflow.store.errors import ConflictError
from ketaflow.store.tables import AuditRecord
from ketaflow.store.types import Role
from ketaflow.store.uow import UnitOfWork
from service_testkit import PASSWORD

MakeUow = Callable[[], UnitOfWork]
MakeUser = Callable[..., UserView]


@pytest.fixture
def users(
    make_uow: MakeUow, auth: Authenticator, clock: ManualClock
) -> Callable[[Callable[[UserService], object]], object]:
    """Run one call on a UserService inside its own unit of work."""

    def run(call: Callable[[UserService], object]) -> object:
        with make_uow() as uow:
            return call(UserService(uow, auth, clock))

    return run


def test_create_normalises_the_name_and_audits_the_role(
    users: Callable[..., object], make_uow: MakeUow
) -> None:
    view = users(
        lambda s: s.create("cli:root", username=" Admin1 ", password=PASSWORD, role="admin")
    )
    assert isinstance(view, UserView)
    assert (view.username, view.role, view.active, view.failed_count) == (
        "admin1",
        Role.ADMIN,
        True,
        0,
    )
    with make_uow() as uow:
        record = uow.session.execute(select(AuditRecord)).scalar_one()
    assert (record.actor, record.action, record.entity, record.entity_id) == (
        "cli:root",
        "create",
        "user",
        str(view.id),
    )
    assert json.loads(record.details) == {"role": "admin"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"username": "no spaces allowed", "role": "nurse"}, "username"),
        ({"username": "nurse1", "role": "wizard"}, "role"),
        ({"username": "nurse1", "role": "kiosk"}, "role"),
        ({"username": "nurse1", "role": "nurse", "password": "too short"}, "password"),
    ],
)
def test_create_refuses_bad_input_naming_the_field(
    users: Callable[..., object], kwargs: dict[str, str], field: str
) -> None:
    arguments = {"password": PASSWORD, **kwargs}
    with pytest.raises(InputError) as info:
        users(lambda s: s.create("t", **arguments))
    assert info.value.field == field


def test_usernames_are_unique_ignoring_case(users: Callable[..., object]) -> None:
    users(lambda s: s.create("t", username="nurse1", password=PASSWORD, role="nurse"))
    with pytest.raises(ConflictError) as info:
        users(lambda s: s.create("t", username="NURSE1", password=PASSWORD, role="physician"))
    assert info.value.field == "username"


def test_unknown_user_is_not_found(users: Callable[..., object]) -> None:
    with pytest.raises(NotFoundError):
        users(lambda s: s.get(4242))


def test_role_change_ends_sessions_and_is_audited(
    users: Callable[..., object], make_user: MakeUser, make_uow: MakeUow, auth: Authenticator
) -> None:
    nurse = make_user(Role.NURSE, username="nurse1")
    with make_uow() as uow:
        token = auth.login(uow, "nurse1", PASSWORD).token
    view = users(lambda s: s.update("user:1:admin", nurse.id, role=Role.PHYSICIAN))
    assert isinstance(view, UserView)
    assert view.role is Role.PHYSICIAN
    with pytest.raises(AuthenticationError), make_uow() as uow:
        auth.authenticate(uow, token)
    with make_uow() as uow:
        last = (
            uow.session.execute(select(AuditRecord).order_by(AuditRecord.seq.desc()))
            .scalars()
            .first()
        )
    assert last is not None
    assert json.loads(last.details) == {"active": True, "fields": ["role"], "role": "physician"}


def test_no_change_is_a_no_op(users: Callable[..., object], make_user: MakeUser) -> None:
    nurse = make_user(Role.NURSE)
    view = users(lambda s: s.update("t", nurse.id, role=Role.NURSE, active=True))
    assert isinstance(view, UserView)
    assert view.updated_at == nurse.updated_at


@pytest.mark.parametrize("change", [{"role": Role.NURSE}, {"active": False}])
def test_the_last_active_admin_cannot_be_removed(
    users: Callable[..., object], make_user: MakeUser, change: dict[str, object]
) -> None:
    admin = make_user(Role.ADMIN)
    second = make_user(Role.ADMIN)  # a second admin, but inactive:
    users(lambda s: s.update("t", second.id, active=False))
    with pytest.raises(StateError, match="last active administrator"):
        users(lambda s: s.update("t", admin.id, **change))
    users(lambda s: s.update("t", second.id, active=True))
    users(lambda s: s.update("t", admin.id, **change))  # now allowed


def test_password_reset_ends_sessions_and_the_new_password_works(
    users: Callable[..., object], make_user: MakeUser, make_uow: MakeUow, auth: Authenticator
) -> None:
    nurse = make_user(Role.NURSE, username="nurse1")
    with make_uow() as uow:
        token = auth.login(uow, "nurse1", PASSWORD).token
    users(lambda s: s.set_password("t", nurse.id, "another long passphrase"))
    with pytest.raises(AuthenticationError), make_uow() as uow:
        auth.authenticate(uow, token)
    with make_uow() as uow:
        auth.login(uow, "nurse1", "another long passphrase")


def test_unlock_lifts_a_lockout(
    users: Callable[..., object], make_user: MakeUser, make_uow: MakeUow, auth: Authenticator
) -> None:
    nurse = make_user(Role.NURSE, username="nurse1")
    for _ in range(auth.policy.max_failed_logins):
        with pytest.raises(AuthenticationError), make_uow() as uow:
            auth.login(uow, "nurse1", "wrong password!!")
    view = users(lambda s: s.get(nurse.id))
    assert isinstance(view, UserView)
    assert view.locked_until is not None
    view = users(lambda s: s.unlock("t", nurse.id))
    assert isinstance(view, UserView)
    assert (view.locked_until, view.failed_count) == (None, 0)
    with make_uow() as uow:
        auth.login(uow, "nurse1", PASSWORD)
