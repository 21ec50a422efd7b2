"""Staff account administration: create, change role, (de)activate, reset password, unlock.

Changing an account's role, deactivating it or resetting its password ends its sessions (and
the kiosk tokens it issued), so a change of rights takes effect on the next request. The last
active administrator cannot be demoted or deactivated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ketaflow.errors import InputError, NotFoundError, StateError
from ketaflow.services.auth import Authenticator, normalise_username
from ketaflow.services.clock import Clock
from ketaflow.store.errors import ConflictError
from ketaflow.store.tables import User
from ketaflow.store.types import Role
from ketaflow.store.uow import UnitOfWork


@dataclass(frozen=True, slots=True)
class UserView:
    """A staff account as shown to administrators (never the password hash)."""

    id: int
    username: str
    role: Role
    active: bool
    failed_count: int
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: User) -> UserView:
        """The view of a stored user."""
        return cls(
            id=user.id,
            username=user.username,
            role=user.role,
            active=user.active,
            failed_count=user.failed_count,
            locked_until=user.locked_until,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )


def account_role(role: Role | str) -> Role:
    """The :class:`Role` an account may have; InputError for unknown roles and for kiosk."""
    try:
        value = Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role if r is not Role.KIOSK)
        raise InputError(f"role must be one of {allowed}; got {role!r}.", field="role") from None
    if value is Role.KIOSK:
        raise InputError(
            "role kiosk is not an account role: a nurse or physician issues a kiosk token for "
            "one infusion session (POST /api/v1/auth/kiosk-tokens).",
            field="role",
        )
    return value


class UserService:
    """Use-cases on staff accounts, inside the caller's unit of work."""

    def __init__(self, uow: UnitOfWork, auth: Authenticator, clock: Clock) -> None:
        self._uow = uow
        self._auth = auth
        self._clock = clock

    def create(self, actor: str, *, username: str, password: str, role: Role | str) -> UserView:
        """Create an active account. Raises InputError for a bad name, password or role and
        ConflictError when the username is taken."""
        name = normalise_username(username)
        new_role = account_role(role)
        if self._uow.users.get_by_username(name) is not None:
            raise ConflictError(
                "username is already taken; choose another or reactivate the existing account.",
                field="username",
            )
        password_hash = self._auth.hash_password(password, username=name)
        now = self._clock.now()
        user = self._uow.users.add(
            User(
                username=name,
                password_hash=password_hash,
                role=new_role,
                active=True,
                failed_count=0,
                locked_until=None,
                created_at=now,
                updated_at=now,
            )
        )
        self._uow.audit.record(
            ts=now,
            actor=actor,
            action="create",
            entity="user",
            entity_id=user.id,
            details={"role": new_role.value},
        )
        return UserView.of(user)

    def list_all(self) -> list[UserView]:
        """Every account, by id."""
        return [UserView.of(u) for u in self._uow.users.list_all()]

    def get(self, user_id: int) -> UserView:
        """One account; NotFoundError when there is none with ``user_id``."""
        return UserView.of(self._get(user_id))

    def _get(self, user_id: int) -> User:
        user = self._uow.users.get(user_id)
        if user is None:
            raise NotFoundError(f"no user with id {user_id}.", field="user_id")
        return user

    def update(
        self,
        actor: str,
        user_id: int,
        *,
        role: Role | str | None = None,
        active: bool | None = None,
    ) -> UserView:
        """Change the role and/or active flag; ends the account's sessions when either changes."""
        user = self._get(user_id)
        new_role = user.role if role is None else account_role(role)
        new_active = user.active if active is None else active
        changed = [
            name
            for name, before, after in (
                ("role", user.role, new_role),
                ("active", user.active, new_active),
            )
            if before != after
        ]
        if not changed:
            return UserView.of(user)
        loses_admin = user.role is Role.ADMIN and user.active
        keeps_admin = new_role is Role.ADMIN and new_active
        if loses_admin and not keeps_admin and self._uow.users.count_active(Role.ADMIN) <= 1:
            raise StateError(
                "this is the last active administrator; make another account admin first.",
                field="role" if "role" in changed else "active",
            )
        now = self._clock.now()
        user.role, user.active, user.updated_at = new_role, new_active, now
        self._uow.login_sessions.revoke_for_user(user.id, at=now)
        self._uow.audit.record(
            ts=now,
            actor=actor,
            action="update",
            entity="user",
            entity_id=user.id,
            details={"fields": changed, "role": new_role.value, "active": new_active},
        )
        return UserView.of(user)

    def set_password(self, actor: str, user_id: int, new_password: str) -> UserView:
        """Set a new password (an administrator's reset); ends the account's sessions."""
        user = self._get(user_id)
        now = self._clock.now()
        user.password_hash = self._auth.hash_password(
            new_password, username=user.username, field="new_password"
        )
        user.updated_at = now
        self._uow.login_sessions.revoke_for_user(user.id, at=now)
        self._uow.audit.record(
            ts=now,
            actor=actor,
            action="update",
            entity="user",
            entity_id=user.id,
            details={"fields": ["password"]},
        )
        return UserView.of(user)

    def unlock(self, actor: str, user_id: int) -> UserView:
        """Lift a lock-out and reset the failed-attempt count."""
        user = self._get(user_id)
        now = self._clock.now()
        user.locked_until, user.failed_count, user.updated_at = None, 0, now
        self._uow.audit.record(
            ts=now,
            actor=actor,
            action="update",
            entity="user",
            entity_id=user.id,
            details={"fields": ["locked_until", "failed_count"]},
        )
        return UserView.of(user)
