"""Who does things: clinical roles and the person acting.

The clinical rules check *roles* (only a physician may override discharge criteria); the
service layer decides who a signed-in user is and maps them onto an :class:`Actor`.
Authentication and user storage are not part of this package.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from ketaflow.errors import AuthError, InputError


class Role(Enum):
    """Roles the clinical rules know about."""

    PATIENT = "patient"
    FRONT_DESK = "front_desk"
    NURSE = "nurse"
    PHYSICIAN = "physician"  # includes prescribers
    PHARMACIST = "pharmacist"
    ADMIN = "admin"
    SYSTEM = "system"  # the service itself (crash recovery, device feeds)


#: Roles that may give clinical care at the chair.
CLINICAL_ROLES = frozenset({Role.NURSE, Role.PHYSICIAN})


@dataclass(frozen=True, slots=True)
class Actor:
    """A person (or the system) acting in a role. ``user_id`` is an opaque identifier."""

    user_id: str
    role: Role

    def __post_init__(self) -> None:
        if not isinstance(self.user_id, str) or not self.user_id.strip():
            raise InputError("actor.user_id: must be a non-empty string", field="actor.user_id")
        if not isinstance(self.role, Role):
            raise InputError(
                f"actor.role: must be a Role ({', '.join(r.value for r in Role)})",
                field="actor.role",
            )


def require_role(actor: Actor, allowed: Iterable[Role], action: str) -> None:
    """Raise AuthError unless ``actor.role`` is one of ``allowed``."""
    allowed_set = frozenset(allowed)
    if actor.role not in allowed_set:
        names = ", ".join(sorted(r.value for r in allowed_set))
        raise AuthError(
            f"{action}: role {actor.role.value!r} may not do this; allowed roles: {names}",
            field="actor.role",
        )


def require_reason(reason: str, field: str = "reason") -> str:
    """Return the stripped reason, or raise InputError if it is empty."""
    if not isinstance(reason, str) or not reason.strip():
        raise InputError(f"{field}: a reason is required; write why in a few words", field=field)
    return reason.strip()
