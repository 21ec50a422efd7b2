"""The drug library: care areas, standard concentrations, soft and hard limits.

This is the software side of a smart pump's dose error reduction system (``clinical.md`` §4):
the library is a versioned data file (``ketaflow/dosing/data/drug_library.toml``) in which every
number has a ``source`` and a ``rationale``. :func:`evaluate_order` lists every limit check of an
order (passed, soft breach, hard breach) and never raises; :func:`check_order` is the gate:

* a **hard** breach raises :class:`~ketaflow.errors.HardLimitError`, always. There is no
  parameter that lets it through; the order must be changed.
* a **soft** breach raises :class:`~ketaflow.errors.SoftLimitError` unless an :class:`Override`
  by a prescriber (role ``physician``) with a reason is given; the override is kept in the
  returned :class:`LimitCheckResult` for the audit trail.
* an undiluted 100 mg/mL concentration is a hard breach in every care area.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from ketaflow.datafile import check_keys, read_toml
from ketaflow.errors import AuthError, HardLimitError, InputError, ProtocolError, SoftLimitError

if TYPE_CHECKING:
    from ketaflow.dosing.orders import DoseOrder

#: Roles that may override a soft limit. Prescribing is a physician's act in this library's
#: governance (clinical.md §4.1: overrides are logged and reviewed); nurses and pharmacists see
#: the alert but cannot accept it.
PRESCRIBER_ROLES: Final = frozenset({"physician"})
#: Minimum length of an override reason: one word ("ok") does not document a decision.
MIN_OVERRIDE_REASON_CHARS: Final = 10

#: Limit names, their display units and what they measure.
LIMIT_UNITS: Final[dict[str, str]] = {
    "dose_mg_per_kg": "mg/kg",
    "rate_mg_per_kg_per_h": "mg/kg/h",
    "rate_mg_per_h": "mg/h",
    "total_mg": "mg",
    "duration_min": "min",
    "bolus_mg_per_kg": "mg/kg",
}
_LIMIT_LABELS: Final[dict[str, str]] = {
    "dose_mg_per_kg": "session dose",
    "rate_mg_per_kg_per_h": "rate per kg",
    "rate_mg_per_h": "rate",
    "total_mg": "total dose",
    "duration_min": "duration",
    "bolus_mg_per_kg": "bolus",
}
_LIMIT_KEYS: Final = {
    "soft_min",
    "soft_max",
    "hard_min",
    "hard_max",
    "allowed",
    "source",
    "rationale",
}
_TOP_KEYS: Final = {
    "schema",
    "version",
    "effective_date",
    "drug",
    "status",
    "governance",
    "presentations",
    "preparation",
    "care_areas",
}
_PRESENTATION_KEYS: Final = {
    "vial_strengths_mg_per_ml",
    "refused_iv_mg_per_ml",
    "refused_iv_source",
    "source",
}
_PREPARATION_KEYS: Final = {
    "diluent",
    "containers_ml",
    "min_draw_volume_ml",
    "source",
    "rationale",
}
_AREA_KEYS: Final = {"label", "advisory", "advisory_source", "concentrations", "usual", "limits"}
_CONC_KEYS: Final = {"allowed_mg_per_ml", "default_vial_mg_per_ml", "source", "rationale"}
_USUAL_KEYS: Final = {
    "dose_mg_per_kg",
    "rate_mg_per_kg_per_h",
    "bolus_mg_per_kg",
    "source",
    "rationale",
}
#: Relative slack when comparing a value with a limit, so that 1.0 mg/kg over 40 min
#: (1.5000000000000002 mg/kg/h in floating point) meets a 1.5 mg/kg/h limit.
_REL_EPS: Final = 1e-9


class LimitStatus(StrEnum):
    """Outcome of one limit check."""

    PASSED = "passed"
    SOFT_BREACH = "soft_breach"
    HARD_BREACH = "hard_breach"


@dataclass(frozen=True, slots=True)
class Limit:
    """Soft and hard bounds on one quantity, with where they come from."""

    name: str
    soft_min: float | None = None
    soft_max: float | None = None
    hard_min: float | None = None
    hard_max: float | None = None
    allowed: bool = True
    source: str = ""
    rationale: str = ""

    @property
    def unit(self) -> str:
        """Display unit of the limited quantity."""
        return LIMIT_UNITS[self.name]

    def status_of(self, value: float) -> tuple[LimitStatus, str]:
        """Status of ``value`` against this limit and the bound it crossed (or ``""``)."""
        u = self.unit
        if self.hard_max is not None and value > self.hard_max * (1 + _REL_EPS):
            return LimitStatus.HARD_BREACH, f"above the hard maximum {self.hard_max:g} {u}"
        if self.hard_min is not None and value < self.hard_min * (1 - _REL_EPS):
            return LimitStatus.HARD_BREACH, f"below the hard minimum {self.hard_min:g} {u}"
        if self.soft_max is not None and value > self.soft_max * (1 + _REL_EPS):
            return LimitStatus.SOFT_BREACH, f"above the soft maximum {self.soft_max:g} {u}"
        if self.soft_min is not None and value < self.soft_min * (1 - _REL_EPS):
            return LimitStatus.SOFT_BREACH, f"below the soft minimum {self.soft_min:g} {u}"
        return LimitStatus.PASSED, ""

    def describe(self) -> str:
        """The bounds in words, e.g. ``"soft 0.1-1 mg/kg, hard max 1.5 mg/kg"``."""
        if not self.allowed:
            return "not allowed"
        parts = []
        if self.soft_min is not None and self.soft_max is not None:
            parts.append(f"soft {self.soft_min:g}-{self.soft_max:g}")
        elif self.soft_min is not None:
            parts.append(f"soft min {self.soft_min:g}")
        elif self.soft_max is not None:
            parts.append(f"soft max {self.soft_max:g}")
        if self.hard_min is not None:
            parts.append(f"hard min {self.hard_min:g}")
        if self.hard_max is not None:
            parts.append(f"hard max {self.hard_max:g}")
        return ", ".join(parts) + f" {self.unit}"


@dataclass(frozen=True, slots=True)
class CareArea:
    """One profile of the library (e.g. the depression infusion suite)."""

    name: str
    label: str
    concentrations_mg_per_ml: tuple[float, ...]
    default_vial_mg_per_ml: float
    refused_iv_mg_per_ml: tuple[float, ...]
    usual_dose_mg_per_kg: float | None
    usual_rate_mg_per_kg_per_h: float | None
    limits: Mapping[str, Limit]
    usual_bolus_mg_per_kg: float | None = None
    advisory: str = ""
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def limit(self, name: str) -> Limit | None:
        """The limit called ``name``, or None when the area sets none."""
        return self.limits.get(name)

    def allows_concentration(self, mg_per_ml: float) -> bool:
        """True if ``mg_per_ml`` is one of the area's standard concentrations."""
        return any(
            math.isclose(mg_per_ml, c, rel_tol=_REL_EPS) for c in self.concentrations_mg_per_ml
        )


@dataclass(frozen=True, slots=True)
class DrugLibrary:
    """A versioned drug library for one drug."""

    version: str
    effective_date: date
    drug: str
    status: str
    governance: str
    vial_strengths_mg_per_ml: tuple[float, ...]
    refused_iv_mg_per_ml: tuple[float, ...]
    diluent: str
    containers_ml: tuple[float, ...]
    min_draw_volume_ml: float
    care_areas: Mapping[str, CareArea]

    def care_area(self, name: str) -> CareArea:
        """The care area called ``name`` (``-`` and ``_`` are the same; any case)."""
        key = name.strip().lower().replace("-", "_") if isinstance(name, str) else ""
        if key not in self.care_areas:
            known = ", ".join(sorted(self.care_areas))
            raise InputError(
                f"care_area: unknown care area {name!r}; choose one of {known}", field="care_area"
            )
        return self.care_areas[key]


# --- loading -----------------------------------------------------------------------------------


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    check_keys(table, allowed, where, error=ProtocolError)


def _require(table: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise ProtocolError(f"{where}: missing required key {key!r}")
    return table[key]


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: must be a table")
    return value


def _pos(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(f"{where}: expected a number, got {value!r}")
    if value <= 0:
        raise ProtocolError(f"{where}: must be > 0, got {value!r}")
    return float(value)


def _pos_list(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ProtocolError(f"{where}: expected a non-empty list of numbers")
    return tuple(_pos(v, where) for v in value)


def _text(table: Mapping[str, Any], key: str, where: str) -> str:
    value = _require(table, key, where)
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError(f"{where}: {key!r} must be a non-empty string")
    return value


def _parse_limit(name: str, raw: Any, where: str) -> Limit:
    table = _table(raw, where)
    _check_keys(table, _LIMIT_KEYS, where)
    source = _text(table, "source", where)
    allowed = table.get("allowed", True)
    if not isinstance(allowed, bool):
        raise ProtocolError(f"{where}: 'allowed' must be true or false")
    values = {
        k: _pos(table[k], f"{where}.{k}")
        for k in ("soft_min", "soft_max", "hard_min", "hard_max")
        if k in table
    }
    if allowed and not values:
        raise ProtocolError(f"{where}: give at least one of soft_min, soft_max, hard_min, hard_max")
    if allowed and "rationale" not in table:
        raise ProtocolError(f"{where}: missing required key 'rationale'")
    chain = [values.get(k) for k in ("hard_min", "soft_min", "soft_max", "hard_max")]
    present = [v for v in chain if v is not None]
    if present != sorted(present):
        raise ProtocolError(
            f"{where}: limits must satisfy hard_min <= soft_min <= soft_max <= hard_max"
        )
    return Limit(
        name=name,
        allowed=allowed,
        source=source,
        rationale=str(table.get("rationale", "")),
        **values,
    )


def _parse_area(
    name: str, raw: Any, refused: tuple[float, ...], vials: tuple[float, ...], where: str
) -> CareArea:
    table = _table(raw, where)
    _check_keys(table, _AREA_KEYS, where)
    label = _text(table, "label", where)
    conc = _table(_require(table, "concentrations", where), f"{where}.concentrations")
    cw = f"{where}.concentrations"
    _check_keys(conc, _CONC_KEYS, cw)
    _text(conc, "source", cw)
    allowed = _pos_list(_require(conc, "allowed_mg_per_ml", cw), f"{cw}.allowed_mg_per_ml")
    for c in allowed:
        if any(math.isclose(c, r) for r in refused):
            raise ProtocolError(f"{cw}: {c:g} mg/mL is refused for IV use and cannot be allowed")
    vial = _pos(_require(conc, "default_vial_mg_per_ml", cw), f"{cw}.default_vial_mg_per_ml")
    if not any(math.isclose(vial, v) for v in vials):
        raise ProtocolError(f"{cw}: default vial {vial:g} mg/mL is not a listed vial strength")
    usual_raw = _table(table.get("usual", {}), f"{where}.usual")
    _check_keys(usual_raw, _USUAL_KEYS, f"{where}.usual")
    if usual_raw:
        _text(usual_raw, "source", f"{where}.usual")
    usual_dose = usual_raw.get("dose_mg_per_kg")
    usual_rate = usual_raw.get("rate_mg_per_kg_per_h")
    usual_bolus = usual_raw.get("bolus_mg_per_kg")
    limits_raw = _table(_require(table, "limits", where), f"{where}.limits")
    _check_keys(limits_raw, set(LIMIT_UNITS), f"{where}.limits")
    limits = {k: _parse_limit(k, v, f"{where}.limits.{k}") for k, v in limits_raw.items()}
    sources = {"concentrations": str(conc["source"])}
    if "advisory_source" in table:
        sources["advisory"] = str(table["advisory_source"])
    return CareArea(
        name=name,
        label=label,
        concentrations_mg_per_ml=allowed,
        default_vial_mg_per_ml=vial,
        refused_iv_mg_per_ml=refused,
        usual_dose_mg_per_kg=None
        if usual_dose is None
        else _pos(usual_dose, f"{where}.usual.dose_mg_per_kg"),
        usual_rate_mg_per_kg_per_h=None
        if usual_rate is None
        else _pos(usual_rate, f"{where}.usual.rate_mg_per_kg_per_h"),
        limits=MappingProxyType(limits),
        usual_bolus_mg_per_kg=None
        if usual_bolus is None
        else _pos(usual_bolus, f"{where}.usual.bolus_mg_per_kg"),
        advisory=str(table.get("advisory", "")),
        sources=MappingProxyType(sources),
    )


def parse_library(data: Mapping[str, Any], *, where: str = "drug library") -> DrugLibrary:
    """Validate a decoded library document; errors name the key and the table."""
    _check_keys(data, _TOP_KEYS, where)
    schema = _require(data, "schema", where)
    if schema != 1:
        raise ProtocolError(f"{where}: unsupported schema {schema!r}; this version reads 1")
    version = _text(data, "version", where)
    effective = _require(data, "effective_date", where)
    if not isinstance(effective, date) or isinstance(effective, datetime):
        raise ProtocolError(f"{where}: effective_date must be a TOML date such as 2025-01-01")
    drug = _text(data, "drug", where)
    pres = _table(_require(data, "presentations", where), f"{where}.presentations")
    pw = f"{where}.presentations"
    _check_keys(pres, _PRESENTATION_KEYS, pw)
    _text(pres, "source", pw)
    vials = _pos_list(_require(pres, "vial_strengths_mg_per_ml", pw), f"{pw}.vial_strengths")
    refused = _pos_list(_require(pres, "refused_iv_mg_per_ml", pw), f"{pw}.refused_iv_mg_per_ml")
    _text(pres, "refused_iv_source", pw)
    prep = _table(_require(data, "preparation", where), f"{where}.preparation")
    rw = f"{where}.preparation"
    _check_keys(prep, _PREPARATION_KEYS, rw)
    _text(prep, "source", rw)
    containers = tuple(sorted(_pos_list(_require(prep, "containers_ml", rw), f"{rw}.containers")))
    areas_raw = _table(_require(data, "care_areas", where), f"{where}.care_areas")
    if not areas_raw:
        raise ProtocolError(f"{where}: define at least one care area")
    areas = {
        name: _parse_area(name, raw, refused, vials, f"{where}.care_areas.{name}")
        for name, raw in areas_raw.items()
    }
    return DrugLibrary(
        version=version,
        effective_date=effective,
        drug=drug.strip().lower(),
        status=str(data.get("status", "")),
        governance=str(data.get("governance", "")),
        vial_strengths_mg_per_ml=vials,
        refused_iv_mg_per_ml=refused,
        diluent=_text(prep, "diluent", rw),
        containers_ml=containers,
        min_draw_volume_ml=_pos(_require(prep, "min_draw_volume_ml", rw), f"{rw}.min_draw"),
        care_areas=MappingProxyType(areas),
    )


def load_library_file(path: str | Path) -> DrugLibrary:
    """Read and validate a library TOML file (for a clinic's own library)."""
    p = Path(path)
    data = read_toml(p, what="drug library", error=ProtocolError)
    return parse_library(data, where=p.name)


@lru_cache(maxsize=1)
def load_library() -> DrugLibrary:
    """The library shipped in the package (``dosing/data/drug_library.toml``)."""
    f = resources.files("ketaflow.dosing") / "data" / "drug_library.toml"
    return parse_library(tomllib.loads(f.read_text(encoding="utf-8")), where=f.name)


# --- checking ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Override:
    """A prescriber's documented decision to accept the soft-limit breaches of one order."""

    reason: str
    by_user: str
    role: str
    at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str) or len(self.reason.strip()) < MIN_OVERRIDE_REASON_CHARS:
            raise InputError(
                f"override.reason: give the clinical reason (at least {MIN_OVERRIDE_REASON_CHARS} "
                "characters)",
                field="override.reason",
            )
        if not isinstance(self.by_user, str) or not self.by_user.strip():
            raise InputError(
                "override.by_user: name the user who overrides", field="override.by_user"
            )
        if not isinstance(self.role, str) or not self.role.strip():
            raise InputError("override.role: give the user's role", field="override.role")


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """One limit check: the quantity, its value, the outcome and a message."""

    name: str
    value: float
    unit: str
    status: LimitStatus
    message: str
    limit: str

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON)."""
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "status": self.status.value,
            "message": self.message,
            "limit": self.limit,
        }


@dataclass(frozen=True, slots=True)
class LimitCheckResult:
    """Every limit check of one order against one care area and library version."""

    library_version: str
    care_area: str
    order_id: str
    concentration_mg_per_ml: float
    checks: tuple[LimitCheck, ...]
    override: Override | None = None

    @property
    def hard_breaches(self) -> tuple[LimitCheck, ...]:
        """Checks that crossed a hard limit."""
        return tuple(c for c in self.checks if c.status is LimitStatus.HARD_BREACH)

    @property
    def soft_breaches(self) -> tuple[LimitCheck, ...]:
        """Checks that crossed a soft limit."""
        return tuple(c for c in self.checks if c.status is LimitStatus.SOFT_BREACH)

    @property
    def passed(self) -> bool:
        """True when no limit was crossed."""
        return not self.hard_breaches and not self.soft_breaches

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON and the audit trail)."""
        return {
            "library_version": self.library_version,
            "care_area": self.care_area,
            "order_id": self.order_id,
            "concentration_mg_per_ml": self.concentration_mg_per_ml,
            "checks": [c.to_dict() for c in self.checks],
            "override": None
            if self.override is None
            else {
                "reason": self.override.reason,
                "by_user": self.override.by_user,
                "role": self.override.role,
                "at": None if self.override.at is None else self.override.at.isoformat(),
            },
        }


def _limit_check(area: CareArea, name: str, value: float) -> LimitCheck | None:
    lim = area.limit(name)
    if lim is None:
        return None
    label = _LIMIT_LABELS[name]
    status, bound = lim.status_of(value)
    shown = f"{label} {value:.4g} {lim.unit}"
    if status is LimitStatus.PASSED:
        message = f"{shown} within limits ({lim.describe()})"
    elif status is LimitStatus.SOFT_BREACH:
        message = (
            f"{shown} is {bound} for the {area.label}: a physician may override with a "
            "documented reason"
        )
    else:
        message = f"{shown} is {bound} for the {area.label} (hard limit, not overridable)"
    return LimitCheck(name, value, lim.unit, status, message, lim.describe())


def validate_concentration(value: float, field: str = "concentration_mg_per_ml") -> float:
    """A positive, finite concentration in mg/mL, else :class:`InputError` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{field}: expected a number of mg/mL, got {value!r}", field=field)
    if value <= 0:
        raise InputError(f"{field}: must be > 0 mg/mL, got {value:g}", field=field)
    return float(value)


def _area(care_area: CareArea | str, library: DrugLibrary) -> CareArea:
    return care_area if isinstance(care_area, CareArea) else library.care_area(care_area)


def evaluate_order(
    order: DoseOrder,
    care_area: CareArea | str,
    concentration_mg_per_ml: float,
    *,
    library: DrugLibrary | None = None,
) -> LimitCheckResult:
    """Every limit check of ``order`` at ``concentration_mg_per_ml``; never raises for breaches.

    Checks, in order: drug, concentration (refused strengths and the area's standard list),
    then for an infusion the session dose, rate per kg, rate, total and duration, and for a
    bolus whether boluses are allowed, the bolus size and the total.
    """
    lib = library if library is not None else load_library()
    area = _area(care_area, lib)
    conc = validate_concentration(concentration_mg_per_ml)
    checks: list[LimitCheck] = []
    if order.drug != lib.drug:
        checks.append(
            LimitCheck(
                "drug",
                0.0,
                "",
                LimitStatus.HARD_BREACH,
                f"the drug library {lib.version} has no entry for {order.drug!r} (only "
                f"{lib.drug!r})",
                lib.drug,
            )
        )
    refused = any(math.isclose(conc, r, rel_tol=_REL_EPS) for r in lib.refused_iv_mg_per_ml)
    allowed = ", ".join(f"{c:g}" for c in area.concentrations_mg_per_ml) + " mg/mL"
    if refused:
        status, message = (
            LimitStatus.HARD_BREACH,
            f"{conc:g} mg/mL is never given IV undiluted: dilute to {allowed}",
        )
    elif not area.allows_concentration(conc):
        status, message = (
            LimitStatus.HARD_BREACH,
            f"{conc:g} mg/mL is not a standard concentration of the {area.label} ({allowed})",
        )
    else:
        status, message = LimitStatus.PASSED, f"{conc:g} mg/mL is a standard concentration"
    checks.append(LimitCheck("concentration_mg_per_ml", conc, "mg/mL", status, message, allowed))

    values: list[tuple[str, float]] = []
    if order.kind == "bolus":
        bolus = area.limit("bolus_mg_per_kg")
        if bolus is not None and not bolus.allowed:
            checks.append(
                LimitCheck(
                    "bolus_mg_per_kg",
                    order.dose_mg_per_kg,
                    "mg/kg",
                    LimitStatus.HARD_BREACH,
                    f"boluses are not allowed in the {area.label}: give the dose as an infusion",
                    "not allowed",
                )
            )
        else:
            values.append(("bolus_mg_per_kg", order.dose_mg_per_kg))
        values.append(("total_mg", order.dose_mg))
    else:
        assert order.rate_mg_per_h is not None
        assert order.rate_mg_per_kg_per_h is not None
        values.extend(
            [
                ("dose_mg_per_kg", order.dose_mg_per_kg),
                ("rate_mg_per_kg_per_h", order.rate_mg_per_kg_per_h),
                ("rate_mg_per_h", order.rate_mg_per_h),
                ("total_mg", order.dose_mg),
                ("duration_min", order.duration_min),
            ]
        )
    for name, value in values:
        check = _limit_check(area, name, value)
        if check is not None:
            checks.append(check)
    return LimitCheckResult(lib.version, area.name, order.order_id, conc, tuple(checks))


def _listing(checks: Sequence[LimitCheck]) -> str:
    return "; ".join(c.message for c in checks)


def check_order(
    order: DoseOrder,
    care_area: CareArea | str,
    concentration_mg_per_ml: float,
    *,
    override: Override | None = None,
    library: DrugLibrary | None = None,
) -> LimitCheckResult:
    """Gate an order through the library.

    Returns the :class:`LimitCheckResult` when every check passed, or when only soft limits were
    crossed and ``override`` comes from a prescriber. Raises
    :class:`~ketaflow.errors.HardLimitError` for any hard breach (with or without an override),
    :class:`~ketaflow.errors.SoftLimitError` for soft breaches without an override, and
    :class:`~ketaflow.errors.AuthError` when the override's role may not prescribe.
    """
    result = evaluate_order(order, care_area, concentration_mg_per_ml, library=library)
    hard = result.hard_breaches
    if hard:
        raise HardLimitError(
            f"order refused by the drug library {result.library_version} "
            f"({result.care_area}): {_listing(hard)}. Hard limits cannot be overridden: "
            "change the order",
            field=hard[0].name,
        )
    soft = result.soft_breaches
    if not soft:
        return result
    if override is None:
        raise SoftLimitError(
            f"order needs a physician's override ({result.care_area}, library "
            f"{result.library_version}): {_listing(soft)}",
            field=soft[0].name,
        )
    if override.role.strip().lower() not in PRESCRIBER_ROLES:
        raise AuthError(
            f"override.role: a soft-limit override needs a prescriber "
            f"({', '.join(sorted(PRESCRIBER_ROLES))}), not {override.role!r}",
            field="override.role",
        )
    return LimitCheckResult(
        result.library_version,
        result.care_area,
        result.order_id,
        result.concentration_mg_per_ml,
        result.checks,
        override,
    )
