"""Request and response bodies, one family per entity: ``*Create``, ``*Update``, ``*Out``.

Requests forbid unknown fields (a misspelt ``weight`` for ``weight_kg`` is a 422, not a silent
no-op). Field limits here document the API; the services apply the same rules (the constants
are theirs) for every caller.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from ketaflow.api.deps import MAX_ID
from ketaflow.services.auth import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, USERNAME_PATTERN
from ketaflow.services.patients import (
    MRN_PATTERN,
    NAME_MAX_LENGTH,
    WEIGHT_KG_MAX,
    WEIGHT_KG_MIN,
)
from ketaflow.store.types import Role, Sex


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Response(BaseModel):
    model_config = ConfigDict(from_attributes=True)


Password = Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX_LENGTH)]
NewPassword = Annotated[str, Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)]
Username = Annotated[str, Field(min_length=1, max_length=64)]
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX_LENGTH)]
Mrn = Annotated[str, Field(pattern=MRN_PATTERN, max_length=32)]


# --- auth ---------------------------------------------------------------------------------


class LoginRequest(_Request):
    """Credentials of a local account."""

    username: Username
    password: Password


class PrincipalOut(_Response):
    """Who is signed in."""

    user_id: int
    username: str
    role: Role
    bound_session_id: int | None = Field(
        description="For a kiosk token: the one infusion session it may act on."
    )
    expires_at: datetime


class LoginResponse(BaseModel):
    """A new session. ``token`` is shown once; the same value is set as the session cookie."""

    token: str
    expires_at: datetime
    principal: PrincipalOut


class PasswordChange(_Request):
    """Change your own password."""

    current_password: Password
    new_password: NewPassword


class KioskTokenCreate(_Request):
    """Issue a kiosk token for one infusion session."""

    infusion_session_id: int = Field(ge=1, le=MAX_ID)


class KioskTokenOut(BaseModel):
    """A kiosk token, shown once. Give it to the kiosk; it acts only on its session."""

    token: str
    expires_at: datetime
    bound_session_id: int


# --- users --------------------------------------------------------------------------------


class UserCreate(_Request):
    """A new staff account."""

    username: Annotated[str, Field(pattern=USERNAME_PATTERN, max_length=64)]
    password: NewPassword
    role: Role = Field(description="Account role; 'kiosk' is refused (kiosk tokens are issued).")


class UserUpdate(_Request):
    """Change an account's role or active flag (either may be left out)."""

    role: Role | None = None
    active: bool | None = None


class PasswordReset(_Request):
    """An administrator sets a new password for an account."""

    new_password: NewPassword


class UserOut(_Response):
    """A staff account (never its password hash)."""

    id: int
    username: str
    role: Role
    active: bool
    failed_count: int
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime


# --- patients -----------------------------------------------------------------------------


class PatientCreate(_Request):
    """Demographics of a new patient."""

    mrn: Mrn
    family_name: Name
    given_name: Name
    birth_date: date
    sex: Sex


class PatientUpdate(_Request):
    """Demographics to change; fields left out stay as they are."""

    mrn: Mrn | None = None
    family_name: Name | None = None
    given_name: Name | None = None
    birth_date: date | None = None
    sex: Sex | None = None


class WeightCreate(_Request):
    """A body weight in kilograms and the day it was measured."""

    weight_kg: float = Field(ge=WEIGHT_KG_MIN, le=WEIGHT_KG_MAX)
    measured_on: date


class WeightOut(_Response):
    """A recorded body weight."""

    id: int
    patient_id: int
    weight_kg: float
    measured_on: date
    recorded_at: datetime
    recorded_by_user_id: int | None


class PatientSummaryOut(_Response):
    """A patient in a search result."""

    id: int
    mrn: str
    family_name: str
    given_name: str
    birth_date: date
    sex: Sex


class PatientOut(PatientSummaryOut):
    """One patient's record."""

    created_at: datetime
    updated_at: datetime
    latest_weight: WeightOut | None


class PatientPageOut(_Response):
    """A page of patients and the total number of matches."""

    items: list[PatientSummaryOut]
    total: int
    limit: int
    offset: int


# --- audit --------------------------------------------------------------------------------


class ChainStatusOut(BaseModel):
    """Result of verifying the audit chain."""

    ok: bool
    records: int
    first_broken_seq: int | None
    reason: str | None


class AuditRecordOut(_Response):
    """One audit record, as stored."""

    seq: int
    ts: datetime
    actor: str
    action: str
    entity: str
    entity_id: str | None
    details: dict[str, object]
    prev_hash: str
    hash: str


# --- health -------------------------------------------------------------------------------


class HealthOut(BaseModel):
    """Liveness of the service and its database."""

    status: str
    database: str
    version: str
