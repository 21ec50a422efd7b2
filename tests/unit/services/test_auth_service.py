"""Sign-in, sessions, lock-out and kiosk tokens, with a manual clock, on both databases."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from ketaflow.config import Settings
from ketaflow.errors import InputError
from ketaflow.services.auth import (
    PASSWORD_MIN_LENGTH,
    AuthenticationError,
    Authenticator,
    AuthPolicy,
    IssuedToken,
    PermissionDeniedError,
    hash_token,
    normalise_username,
    validate_password,
)
from ketaflow.services.clock import ManualClock
from ketaflow.services.users import UserService, UserView
from ketaflow.store.tables import AuditRecord, LoginSession
from ketaflow.store.types import Role
from ketaflow.store.uow import UnitOfWork
from service_testkit import FAST_HASHER, PASSWORD

MakeUow = Callable[[], UnitOfWork]
MakeUser = Callable[..., UserView]


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("x" * (PASSWORD_MIN_LENGTH - 1), "at least 12 characters; got 11"),
        ("x" * 257, "at most 256"),
        ("Nurse.Jackie1", "must not be the username"),
    ],
)
def test_password_policy_refusals_name_the_field(password: str, problem: str) -> None:
    with pytest.raises(InputError, match=problem) as info:
        validate_password(password, username="nurse.jackie1")
    assert info.value.field == "password"


def test_a_twelve_character_password_is_enough() -> None:
    validate_password("x" * PASSWORD_MIN_LENGTH, username="nurse1")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(" Alice ", "alice"), ("dr.who_2", "dr.who_2"), ("a-b", "a-b")],
)
def test_usernames_are_normalised(raw: str, expected: str) -> None:
    assert normalise_username(raw) == expected


@pytest.mark.parametrize("raw", ["ab", "-lead", "has space", "é" * 5, "x" * 65, ""])
def test_malformed_usernames_are_refused(raw: str) -> None:
    with pytest.raises(InputError) as info:
        normalise_username(raw)
    assert info.value.field == "username"


def _login(make_uow: MakeUow, auth: Authenticator, username: str, password: str) -> IssuedToken:
    with make_uow() as uow:
        return auth.login(uow, username, password)


def _audit(make_uow: MakeUow) -> list[AuditRecord]:
    with make_uow() as uow:
        return list(uow.session.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars())


def test_login_opens_a_session_stored_only_as_a_token_hash(
    make_uow: MakeUow, auth: Authenticator, make_user: MakeUser, clock: ManualClock
) -> None:
    user = make_user(Role.NURSE, username="nurse1")
    issued = _login(make_uow, auth, " Nurse1 ", PASSWORD)
    assert issued.principal.user_id == user.id
    assert issued.principal.role is Role.NURSE
    assert issued.expires_at == clock.now() + auth.policy.session_ttl
    assert len(issued.token) >= 43  # 256 bits, URL-safe base64
    with make_uow() as uow:
        stored = list(uow.session.execute(select(LoginSession)).scalars())
    assert [s.token_hash for s in stored] == [hash_token(issued.token)]
    login_audit = _audit(make_uow)[-1]
    assert (login_audit.action, login_audit.entity) == ("login", "login_session")
    assert login_audit.actor == f"user:{user.id}:nurse1"


def _failure_message(make_uow: MakeUow, auth: Authenticator, username: str, password: str) -> str:
    with pytest.raises(AuthenticationError) as info:
        _login(make_uow, auth, username, password)
    return info.value.message


def test_failures_look_the_same_whatever_the_cause_but_are_audited_with_it(
    make_uow: MakeUow, auth: Authenticator, make_user: MakeUser
) -> None:
    make_user(Role.NURSE, username="nurse1")
    unknown = _failure_message(make_uow, auth, "nobody", PASSWORD)
    wrong = _failure_message(make_uow, auth, "nurse1", "wrong password!!")
    assert unknown == wrong
    failures = [r for r in _audit(make_uow) if r.action == "login_failed"]
    assert [json.loads(r.details)["reason"] for r in failures] == ["unknown_user", "bad_password"]
    assert failures[0].actor == "anonymous"
    assert "nobody" not in failures[0].details + failures[0].actor  # typed names are not kept


def test_lockout_after_max_failures_then_unlocks_after_lockout_minutes(
    make_uow: MakeUow,
    auth: Authenticator,
    make_user: MakeUser,
    clock: ManualClock,
    settings: Settings,
) -> None:
    make_user(Role.NURSE, username="nurse1")
    for _ in range(settings.max_failed_logins):
        _failure_message(make_uow, auth, "nurse1", "wrong password!!")
    with make_uow() as uow:
        user = uow.users.get_by_username("nurse1")
        assert user is not None
        assert user.locked_until == clock.now() + auth.policy.lockout
    # Locked: even the right password fails, and that is audited as "locked".
    _failure_message(make_uow, auth, "nurse1", PASSWORD)
    assert json.loads(_audit(make_uow)[-1].details) == {"reason": "locked"}
    clock.advance(minutes=settings.lockout_min - 0.1)
    _failure_message(make_uow, auth, "nurse1", PASSWORD)
    clock.advance(minutes=0.1)
    assert _login(make_uow, auth, "nurse1", PASSWORD).principal.username == "nurse1"
    with make_uow() as uow:
        user = uow.users.get_by_username("nurse1")
        assert user is not None
        assert (user.failed_count, user.locked_until) == (0, None)


def test_a_success_resets_the_failure_count(
    make_uow: MakeUow, auth: Authenticator, make_user: MakeUser, settings: Settings
) -> None:
    make_user(Role.NURSE, username="nurse1")
    for _ in range(settings.max_failed_logins - 1):
        _failure_message(make_uow, auth, "nurse1", "wrong password!!")
    _login(make_uow, auth, "nurse1", PASSWORD)
    _failure_message(make_uow, auth, "nurse1", "wrong password!!")
    with make_uow() as uow:
        user = uow.users.get_by_username("nurse1")
        assert user is not None
        assert (user.failed_count, user.locked_until) == (1, None)


def _authenticate(make_uow: MakeUow, auth: Authenticator, token: str) -> Role:
    with make_uow() as uow:
        return auth.authenticate(uow, token).role


def test_idle_timeout_ends_a_session_and_activity_extends_it(
    make_uow: MakeUow,
    auth: Authenticator,
    make_user: MakeUser,
    clock: ManualClock,
    settings: Settings,
) -> None:
    make_user(Role.NURSE, username="nurse1")
    token = _login(make_uow, auth, "nurse1", PASSWORD).token
    idle = settings.session_idle_timeout_min
    clock.advance(minutes=idle - 1)
    assert _authenticate(make_uow, auth, token) is Role.NURSE
    clock.advance(minutes=idle - 1)  # measured from the last request, not from login
    assert _authenticate(make_uow, auth, token) is Role.NURSE
    clock.advance(minutes=idle)
    with pytest.raises(AuthenticationError, match="idle"):
        _authenticate(make_uow, auth, token)


def test_absolute_expiry_ends_an_active_session(
    make_uow: MakeUow, make_user: MakeUser, clock: ManualClock
) -> None:
    policy = AuthPolicy.from_settings(Settings(session_ttl_min=60, session_idle_timeout_min=15))
    auth = Authenticator(policy, clock, FAST_HASHER)
    make_user(Role.NURSE, username="nurse1")
    token = _login(make_uow, auth, "nurse1", PASSWORD).token
    for _ in range(5):
        clock.advance(minutes=10)
        assert _authenticate(make_uow, auth, token) is Role.NURSE
    clock.advance(minutes=10)
    with pytest.raises(AuthenticationError, match="expired"):
        _authenticate(make_uow, auth, token)


@pytest.mark.parametrize("token", [None, "", "x" * 43, "y" * 500])
def test_missing_or_unknown_tokens_are_refused(
    make_uow: MakeUow, auth: Authenticator, token: str | None
) -> None:
    with pytest.raises(AuthenticationError), make_uow() as uow:
        auth.authenticate(uow, token)


def test_logout_revokes_and_is_audited(
    make_uow: MakeUow, auth: Authenticator, make_user: MakeUser
) -> None:
    make_user(Role.NURSE, username="nurse1")
    issued = _login(make_uow, auth, "nurse1", PASSWORD)
    with make_uow() as uow:
        auth.logout(uow, issued.principal)
    with pytest.raises(AuthenticationError, match="not valid"):
        _authenticate(make_uow, auth, issued.token)
    assert _audit(make_uow)[-1].action == "logout"


def test_inactive_accounts_cannot_sign_in_or_use_old_tokens(
    make_uow: MakeUow, auth: Authenticator, make_user: MakeUser, clock: ManualClock
) -> None:
    make_user(Role.ADMIN, username="admin1")
    nurse = make_user(Role.NURSE, username="nurse1")
    token = _login(make_uow, auth, "nurse1", PASSWORD).token
    with make_uow() as uow:
        UserService(uow, auth, clock).update("test", nurse.id, active=False)
    with pytest.raises(AuthenticationError):
        _authenticate(make_uow, auth, token)
    _failure_message(make_uow, auth, "nurse1", PASSWORD)
    assert json.loads(_audit(make_uow)[-1].details) == {"reason": "inactive"}


def test_kiosk_token_is_bound_to_one_infusion_session(
    make_uow: MakeUow, auth: Authenticator, make_user: MakeUser
) -> None:
    make_user(Role.NURSE, username="nurse1")
    nurse = _login(make_uow, auth, "nurse1", PASSWORD).principal
    with make_uow() as uow:
        kiosk = auth.issue_kiosk_token(uow, nurse, 42)
    with make_uow() as uow:
        principal = auth.authenticate(uow, kiosk.token)
    assert principal.role is Role.KIOSK
    assert principal.bound_session_id == 42
    assert principal.may_access_session(42)
    assert not principal.may_access_session(43)
    assert principal.actor == f"kiosk:{principal.login_session_id}"
    assert nurse.may_access_session(43)  # staff are not bound
    issued = _audit(make_uow)[-1]
    assert json.loads(issued.details) == {"bound_session_id": 42, "kind": "kiosk"}


@pytest.mark.parametrize("role", [Role.FRONT_DESK, Role.ADMIN])
def test_only_nurses_and_physicians_issue_kiosk_tokens(
    make_uow: MakeUow, auth: Authenticator, make_user: MakeUser, role: Role
) -> None:
    user = make_user(role)
    principal = _login(make_uow, auth, user.username, PASSWORD).principal
    with pytest.raises(PermissionDeniedError), make_uow() as uow:
        auth.issue_kiosk_token(uow, principal, 1)


def test_kiosk_token_needs_a_positive_session_id(
    make_uow: MakeUow, auth: Authenticator, make_user: MakeUser
) -> None:
    make_user(Role.PHYSICIAN, username="doc1")
    doc = _login(make_uow, auth, "doc1", PASSWORD).principal
    with pytest.raises(InputError) as info, make_uow() as uow:
        auth.issue_kiosk_token(uow, doc, 0)
    assert info.value.field == "infusion_session_id"


def test_kiosk_tokens_end_when_the_issuer_is_deactivated(
    make_uow: MakeUow, auth: Authenticator, make_user: MakeUser, clock: ManualClock
) -> None:
    make_user(Role.ADMIN, username="admin1")
    nurse_view = make_user(Role.NURSE, username="nurse1")
    nurse = _login(make_uow, auth, "nurse1", PASSWORD).principal
    with make_uow() as uow:
        kiosk = auth.issue_kiosk_token(uow, nurse, 5)
    with make_uow() as uow:
        UserService(uow, auth, clock).update("test", nurse_view.id, active=False)
    with pytest.raises(AuthenticationError):
        _authenticate(make_uow, auth, kiosk.token)


def test_changing_password_ends_other_sessions_but_not_this_one_or_kiosks(
    make_uow: MakeUow, auth: Authenticator, make_user: MakeUser
) -> None:
    make_user(Role.NURSE, username="nurse1")
    here = _login(make_uow, auth, "nurse1", PASSWORD)
    elsewhere = _login(make_uow, auth, "nurse1", PASSWORD)
    with make_uow() as uow:
        kiosk = auth.issue_kiosk_token(uow, here.principal, 3)
    with pytest.raises(InputError) as info, make_uow() as uow:
        auth.change_password(uow, here.principal, "not my password", "a brand new passphrase")
    assert info.value.field == "current_password"
    with make_uow() as uow:
        auth.change_password(uow, here.principal, PASSWORD, "a brand new passphrase")
    assert _authenticate(make_uow, auth, here.token) is Role.NURSE
    assert _authenticate(make_uow, auth, kiosk.token) is Role.KIOSK
    with pytest.raises(AuthenticationError):
        _authenticate(make_uow, auth, elsewhere.token)
    _login(make_uow, auth, "nurse1", "a brand new passphrase")
    assert json.loads(_audit(make_uow)[-2].details) == {"fields": ["password"]}


def test_new_password_must_meet_the_policy(
    make_uow: MakeUow, auth: Authenticator, make_user: MakeUser
) -> None:
    make_user(Role.NURSE, username="nurse1")
    here = _login(make_uow, auth, "nurse1", PASSWORD)
    with pytest.raises(InputError) as info, make_uow() as uow:
        auth.change_password(uow, here.principal, PASSWORD, "short")
    assert info.value.field == "new_password"


def test_hashes_made_with_old_parameters_are_upgraded_at_login(
    make_uow: MakeUow, make_user: MakeUser, clock: ManualClock, settings: Settings
) -> None:
    make_user(Role.NURSE, username="nurse1")  # hashed with FAST_HASHER
    stronger = PasswordHasher(time_cost=2, memory_cost=1024, parallelism=1)
    auth = Authenticator(AuthPolicy.from_settings(settings), clock, stronger)
    _login(make_uow, auth, "nurse1", PASSWORD)
    with make_uow() as uow:
        user = uow.users.get_by_username("nurse1")
        assert user is not None
        assert "m=1024,t=2,p=1" in user.password_hash
    _login(make_uow, auth, "nurse1", PASSWORD)
