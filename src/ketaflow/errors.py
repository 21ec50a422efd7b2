"""The one error tree of ketaflow.

Every error a user can cause is a :class:`KetaflowError`. Messages name the parameter, the
allowed range or form, the value received and, where possible, a fix. They never carry patient
data (names, identifiers), because they end up in logs and HTTP responses.

::

    KetaflowError
    ├── InputError                  bad input from a person or a file (CLI exit 2, HTTP 422)
    │   ├── UnitError               a quantity with a missing, unknown or wrong-dimension unit
    │   ├── DoseTextError           dose text that does not follow the grammar
    │   ├── ModelDefinitionError    a PK model file or parameter set that is malformed
    │   └── ProtocolError           a protocol or drug-library file that is malformed
    ├── SafetyError                 refused because it would be unsafe (HTTP 409)
    │   ├── HardLimitError          a drug-library hard limit; can never be overridden
    │   └── SoftLimitError          a soft limit; needs a prescriber's override with a reason
    ├── StateError                  an action the current state forbids (HTTP 409)
    ├── NotFoundError               no such record (HTTP 404)
    ├── AuthError                   not signed in or not allowed (HTTP 401/403)
    └── StorageError                the database refused or is unreachable (HTTP 503)

``ModelValidityWarning`` is a warning, not an error: a patient outside a model's studied
population still gets a prediction, and the caller sees why it is less trustworthy.
"""

from __future__ import annotations


class KetaflowError(Exception):
    """Base class of every error ketaflow raises on purpose."""

    #: Stable, machine-readable code used by the API's error shape and the CLI.
    code: str = "ketaflow_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Dotted name of the offending input field, when there is one (API field errors).
        self.field = field

    def __str__(self) -> str:
        return self.message


class InputError(KetaflowError, ValueError):
    """Input that does not make sense; nothing was changed."""

    code = "invalid_input"


class UnitError(InputError):
    """A quantity whose unit is missing, unknown or of the wrong dimension."""

    code = "invalid_unit"


class DoseTextError(InputError):
    """Dose text that does not follow the dose grammar."""

    code = "invalid_dose_text"


class ModelDefinitionError(InputError):
    """A pharmacokinetic model definition that is incomplete or inconsistent."""

    code = "invalid_model"


class ProtocolError(InputError):
    """A protocol, titration rule or drug-library file that is malformed."""

    code = "invalid_protocol"


class SafetyError(KetaflowError):
    """Refused because it would be unsafe for the patient."""

    code = "unsafe"


class HardLimitError(SafetyError):
    """A hard limit of the drug library was crossed. Hard limits cannot be overridden."""

    code = "hard_limit"


class SoftLimitError(SafetyError):
    """A soft limit was crossed; a prescriber may override it with a documented reason."""

    code = "soft_limit"


class StateError(KetaflowError):
    """The action is not allowed in the current state of the record."""

    code = "invalid_state"


class NotFoundError(KetaflowError):
    """No record with that identifier (or the caller may not know it exists)."""

    code = "not_found"


class AuthError(KetaflowError):
    """Not authenticated, or the role may not do this."""

    code = "not_authorised"


class AuthenticationError(AuthError):
    """No valid credentials: not signed in, wrong password, expired or revoked. HTTP 401."""

    code = "not_authenticated"


class PermissionDeniedError(AuthError):
    """Signed in, but the role may not do this. HTTP 403."""

    code = "forbidden"


class ConflictError(StateError):
    """The change collides with an existing record (a duplicate unique value). HTTP 409."""

    code = "conflict"


class StorageError(KetaflowError):
    """The database could not complete the operation."""

    code = "storage_unavailable"


class ModelValidityWarning(UserWarning):
    """The patient lies outside the population a PK/PD model was built from."""
