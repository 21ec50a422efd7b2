"""Sign-in, sessions, lock-out and kiosk tokens for local accounts.

- Passwords: Argon2id (argon2-cffi), at least :data:`PASSWORD_MIN_LENGTH` characters
  (NIST SP 800-63B favours length over composition rules), never equal to the username.
- Tokens: 256 random bits (``secrets.token_urlsafe``), shown once; only their SHA-256 is stored,
  so a copy of the database cannot be replayed as a session.
- Sessions end at an absolute expiry (``Settings.session_ttl_min``) or after
  ``Settings.session_idle_timeout_min`` without a request, or when revoked (logout, password or
  role change, deactivation).
- Lock-out: ``Settings.max_failed_logins`` failures in a row lock the account for
  ``Settings.lockout_min``. Every sign-in, successful or not, is audited; failures are committed
  even though the request fails.
- Kiosk tokens act with role ``kiosk`` for ONE infusion session (``bound_session_id``); they are
  issued by a nurse or physician and revoked with the issuer's sessions.

Failure messages are the same whether the username exists or not, and an unknown username
still costs one Argon2 verification, so neither wording nor timing reveals which accounts exist.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Final, NoReturn

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ketaflow.config import Settings
from ketaflow.errors import AuthenticationError as AuthenticationError
from ketaflow.errors import InputError, NotFoundError
from ketaflow.errors import PermissionDeniedError as PermissionDeniedError
from ketaflow.services.clock import Clock
from ketaflow.store.tables import InfusionSession, LoginSession, User
from ketaflow.store.types import Role
from ketaflow.store.uow import UnitOfWork

PASSWORD_MIN_LENGTH: Final[int] = 12
#: Long enough for any passphrase, short enough that hashing cannot be used to burn CPU.
PASSWORD_MAX_LENGTH: Final[int] = 256
USERNAME_PATTERN: Final[str] = r"^[a-z0-9][a-z0-9._-]{2,63}$"
_USERNAME_RE = re.compile(USERNAME_PATTERN)
#: Random bytes per session token (256 bits).
TOKEN_BYTES: Final[int] = 32
#: Longer strings cannot be our tokens; refusing them early avoids hashing junk.
TOKEN_MAX_LENGTH: Final[int] = 128

STAFF_ROLES: Final[frozenset[Role]] = frozenset(
    {Role.ADMIN, Role.PHYSICIAN, Role.NURSE, Role.FRONT_DESK}
)
ALL_ROLES: Final[frozenset[Role]] = frozenset(Role)
#: Who may issue a kiosk token for an infusion session.
KIOSK_ISSUER_ROLES: Final[frozenset[Role]] = frozenset({Role.NURSE, Role.PHYSICIAN})


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """The session and lock-out rules, as durations."""

    session_ttl: timedelta
    idle_timeout: timedelta
    max_failed_logins: int
    lockout: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthPolicy:
        """The policy configured by ``settings`` (minutes in the settings)."""
        return cls(
            session_ttl=timedelta(minutes=settings.session_ttl_min),
            idle_timeout=timedelta(minutes=settings.session_idle_timeout_min),
            max_failed_logins=settings.max_failed_logins,
            lockout=timedelta(minutes=settings.lockout_min),
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is making a request: the signed-in user (or kiosk token) and its role."""

    user_id: int
    username: str
    role: Role
    login_session_id: int
    bound_session_id: int | None
    expires_at: datetime

    @property
    def actor(self) -> str:
        """How the audit log names this principal (identifiers only)."""
        if self.role is Role.KIOSK:
            return f"kiosk:{self.login_session_id}"
        return f"user:{self.user_id}:{self.username}"

    def may_access_session(self, infusion_session_id: int) -> bool:
        """Whether this principal may act on infusion session ``infusion_session_id``.

        Staff may act on any session (their role decides what); a kiosk token only on the one
        session it is bound to.
        """
        if self.role is Role.KIOSK:
            return self.bound_session_id == infusion_session_id
        return True


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new session token. ``token`` is the secret: it is returned once and never stored."""

    token: str
    principal: Principal
    expires_at: datetime


def hash_token(token: str) -> str:
    """SHA-256 (hex) of a session token: what the database stores and looks up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def normalise_username(username: str) -> str:
    """Lower-cased, stripped username; raises :class:`InputError` when malformed."""
    name = username.strip().lower()
    if not _USERNAME_RE.fullmatch(name):
        raise InputError(
            "username must be 3-64 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit; got a value that does not match.",
            field="username",
        )
    return name


def validate_password(password: str, *, username: str, field: str = "password") -> None:
    """Raise :class:`InputError` unless ``password`` meets the policy."""
    if len(password) < PASSWORD_MIN_LENGTH:
        raise InputError(
            f"{field} must have at least {PASSWORD_MIN_LENGTH} characters; got {len(password)}. "
            "A passphrase of several words is easiest to remember.",
            field=field,
        )
    if len(password) > PASSWORD_MAX_LENGTH:
        raise InputError(
            f"{field} must have at most {PASSWORD_MAX_LENGTH} characters; got {len(password)}.",
            field=field,
        )
    if password.strip().lower() == username.strip().lower():
        raise InputError(f"{field} must not be the username.", field=field)


def _sign_in_failed(policy: AuthPolicy) -> AuthenticationError:
    minutes = policy.lockout.total_seconds() / 60
    return AuthenticationError(
        "sign-in failed: the username or password is wrong, or the account is locked or "
        f"inactive. After {policy.max_failed_logins} failed attempts an account is locked for "
        f"{minutes:g} minutes; an administrator can unlock it."
    )


class Authenticator:
    """Signs people in and out and resolves tokens to principals.

    Every method takes the caller's :class:`UnitOfWork` and never commits, except
    :meth:`login` on failure: the failed attempt (and a lock) must persist although the
    request fails, so it commits through ``uow.commit()`` before raising.
    """

    def __init__(
        self, policy: AuthPolicy, clock: Clock, hasher: PasswordHasher | None = None
    ) -> None:
        self.policy = policy
        self.clock = clock
        self._hasher = hasher if hasher is not None else PasswordHasher()

    @cached_property
    def _dummy_hash(self) -> str:
        # Verified against when the username is unknown, so that case costs the same time.
        return self._hasher.hash(secrets.token_urlsafe(16))

    def hash_password(self, password: str, *, username: str, field: str = "password") -> str:
        """Check ``password`` against the policy and return its Argon2id hash."""
        validate_password(password, username=username, field=field)
        return self._hasher.hash(password)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def login(self, uow: UnitOfWork, username: str, password: str) -> IssuedToken:
        """Check the credentials and open a login session.

        Raises :class:`AuthenticationError` (one message for every cause) after committing the
        failed attempt to the account and the audit log.
        """
        now = self.clock.now()
        name = username.strip().lower()
        user = uow.users.get_by_username(name) if _USERNAME_RE.fullmatch(name) else None
        if user is None:
            self._verify(self._dummy_hash, password)
            self._fail(uow, None, now, reason="unknown_user")
        elif user.locked_until is not None and user.locked_until > now:
            self._verify(self._dummy_hash, password)
            self._fail(uow, user, now, reason="locked")
        elif not user.active:
            self._verify(self._dummy_hash, password)
            self._fail(uow, user, now, reason="inactive")
        elif not self._verify(user.password_hash, password):
            user.failed_count += 1
            locked = user.failed_count >= self.policy.max_failed_logins
            details: dict[str, int | bool] = {"failed_count": user.failed_count, "locked": locked}
            if locked:
                user.locked_until = now + self.policy.lockout
                user.failed_count = 0
            user.updated_at = now
            self._fail(uow, user, now, reason="bad_password", **details)
        user.failed_count = 0
        user.locked_until = None
        if self._hasher.check_needs_rehash(user.password_hash):
            user.password_hash = self._hasher.hash(password)
        issued = self._open_session(uow, user, now, bound_session_id=None)
        uow.audit.record(
            ts=now,
            actor=issued.principal.actor,
            action="login",
            entity="login_session",
            entity_id=issued.principal.login_session_id,
        )
        return issued

    def _fail(
        self, uow: UnitOfWork, user: User | None, now: datetime, *, reason: str, **extra: int | bool
    ) -> NoReturn:
        uow.audit.record(
            ts=now,
            actor="anonymous" if user is None else f"user:{user.id}:{user.username}",
            action="login_failed",
            entity="user",
            entity_id=None if user is None else user.id,
            details={"reason": reason, **extra},
        )
        uow.commit()
        raise _sign_in_failed(self.policy)

    def _open_session(
        self, uow: UnitOfWork, user: User, now: datetime, *, bound_session_id: int | None
    ) -> IssuedToken:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        login_session = uow.login_sessions.add(
            LoginSession(
                token_hash=hash_token(token),
                user_id=user.id,
                bound_session_id=bound_session_id,
                created_at=now,
                last_seen_at=now,
                expires_at=now + self.policy.session_ttl,
                revoked=False,
            )
        )
        principal = _principal(login_session, user)
        return IssuedToken(token=token, principal=principal, expires_at=login_session.expires_at)

    def authenticate(self, uow: UnitOfWork, token: str | None, *, touch: bool = True) -> Principal:
        """The principal for ``token``; raises :class:`AuthenticationError` when it is missing,
        unknown, revoked, expired or idle too long, or its account is inactive.

        With ``touch`` (the default) the request counts as activity for the idle timeout.
        """
        if not token:
            raise AuthenticationError(
                "not signed in: send the session token as 'Authorization: Bearer <token>' or "
                "the session cookie; get one from POST /api/v1/auth/login."
            )
        login_session = (
            uow.login_sessions.get_by_token_hash(hash_token(token))
            if len(token) <= TOKEN_MAX_LENGTH
            else None
        )
        if login_session is None or login_session.revoked:
            raise AuthenticationError("the session token is not valid; sign in again.")
        now = self.clock.now()
        if now >= login_session.expires_at:
            raise AuthenticationError(
                "the session has expired (sessions last "
                f"{self.policy.session_ttl.total_seconds() / 60:g} minutes); sign in again."
            )
        if now - login_session.last_seen_at >= self.policy.idle_timeout:
            raise AuthenticationError(
                "the session ended after "
                f"{self.policy.idle_timeout.total_seconds() / 60:g} idle minutes; sign in again."
            )
        user = login_session.user
        if not user.active:
            raise AuthenticationError("the account is inactive; ask an administrator.")
        if touch:
            login_session.last_seen_at = now
        return _principal(login_session, user)

    def logout(self, uow: UnitOfWork, principal: Principal) -> None:
        """Revoke the principal's login session."""
        now = self.clock.now()
        login_session = uow.login_sessions.get(principal.login_session_id)
        if login_session is not None and not login_session.revoked:
            login_session.revoked = True
            login_session.revoked_at = now
        uow.audit.record(
            ts=now,
            actor=principal.actor,
            action="logout",
            entity="login_session",
            entity_id=principal.login_session_id,
        )

    def issue_kiosk_token(
        self, uow: UnitOfWork, issuer: Principal, infusion_session_id: int
    ) -> IssuedToken:
        """A kiosk token for ONE infusion session, issued by ``issuer`` (a nurse or physician).

        The token expires with the usual absolute and idle limits and is revoked whenever the
        issuer's sessions are.
        """
        if issuer.role not in KIOSK_ISSUER_ROLES:
            raise PermissionDeniedError(
                f"only {', '.join(sorted(KIOSK_ISSUER_ROLES))} may issue kiosk tokens; "
                f"the signed-in role is {issuer.role.value}."
            )
        if infusion_session_id < 1:
            raise InputError(
                f"infusion_session_id must be a positive integer; got {infusion_session_id}.",
                field="infusion_session_id",
            )
        if uow.session.get(InfusionSession, infusion_session_id) is None:
            raise NotFoundError(
                f"no infusion session with id {infusion_session_id}.",
                field="infusion_session_id",
            )
        user = uow.users.get(issuer.user_id)
        if user is None or not user.active:
            raise AuthenticationError("the issuing account is inactive; sign in again.")
        now = self.clock.now()
        issued = self._open_session(uow, user, now, bound_session_id=infusion_session_id)
        uow.audit.record(
            ts=now,
            actor=issuer.actor,
            action="create",
            entity="login_session",
            entity_id=issued.principal.login_session_id,
            details={"kind": "kiosk", "bound_session_id": infusion_session_id},
        )
        return issued

    def change_password(
        self, uow: UnitOfWork, principal: Principal, current_password: str, new_password: str
    ) -> None:
        """Change the signed-in user's own password and end their other sessions."""
        if principal.role is Role.KIOSK:
            raise PermissionDeniedError("a kiosk token has no password to change.")
        user = uow.users.get(principal.user_id)
        if user is None or not self._verify(user.password_hash, current_password):
            raise InputError(
                "current_password is wrong; the password was not changed.",
                field="current_password",
            )
        now = self.clock.now()
        user.password_hash = self.hash_password(
            new_password, username=user.username, field="new_password"
        )
        user.updated_at = now
        # Every other sign-in of this user ends; kiosk tokens they issued keep running.
        uow.login_sessions.revoke_for_user(
            user.id, at=now, keep_id=principal.login_session_id, include_kiosk=False
        )
        uow.audit.record(
            ts=now,
            actor=principal.actor,
            action="update",
            entity="user",
            entity_id=user.id,
            details={"fields": ["password"]},
        )


def _principal(login_session: LoginSession, user: User) -> Principal:
    return Principal(
        user_id=user.id,
        username=user.username,
        role=Role.KIOSK if login_session.bound_session_id is not None else user.role,
        login_session_id=login_session.id,
        bound_session_id=login_session.bound_session_id,
        expires_at=login_session.expires_at,
    )
