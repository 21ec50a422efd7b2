"""Discharge criteria: each criterion met or not, and the physician override.

:func:`evaluate_discharge` checks, for a profile from ``clinical/data/discharge.toml``:

=====================  =============================================================
``observation_time``   minimum observation after the infusion end (IV ketamine) or after
                       dosing (esketamine REMS: 2 h)
``aldrete``            modified Aldrete >= 9
``vitals_recent``      SBP, DBP, HR and SpO2 measured within ``vitals_max_age_min``
``sbp_near_baseline``  SBP within the tolerance of the pre-infusion baseline
``dbp_near_baseline``  DBP likewise
``hr_near_baseline``   HR likewise (tolerance in % of baseline)
``spo2``               SpO2 at or above ``min_spo2_pct``
``escort``             a responsible adult escort is confirmed
``no_driving``         the patient acknowledged no driving until the next day
=====================  =============================================================

:func:`authorize_discharge` allows discharge when every criterion is met; otherwise only a
physician may discharge, with a written reason (:class:`~ketaflow.errors.AuthError` for
another role, :class:`~ketaflow.errors.StateError` when nothing overrides the unmet criteria).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

from ketaflow.clinical._data import check_keys, get_number, get_str, read_file, read_packaged
from ketaflow.clinical.actors import CLINICAL_ROLES, Actor, Role, require_reason, require_role
from ketaflow.clinical.clock import require_aware
from ketaflow.clinical.scales import ScaleScore
from ketaflow.clinical.vitals import VitalKind, VitalReading, VitalSet
from ketaflow.errors import AuthError, InputError, NotFoundError, ProtocolError, StateError
from ketaflow.units import S_PER_MIN

#: Criterion codes in evaluation order.
CRITERIA_CODES = (
    "observation_time",
    "aldrete",
    "vitals_recent",
    "sbp_near_baseline",
    "dbp_near_baseline",
    "hr_near_baseline",
    "spo2",
    "escort",
    "no_driving",
)


@dataclass(frozen=True, slots=True)
class DischargeCriteria:
    """One discharge profile (all numbers with their sources in the data file)."""

    profile: str
    description: str
    min_observation_min: float
    observation_from: Literal["infusion_end", "dose_start"]
    min_aldrete: int
    vitals_max_age_min: float
    sbp_tolerance_mmhg: float
    dbp_tolerance_mmhg: float
    hr_tolerance_pct: float
    min_spo2_pct: float
    sources: Mapping[str, str]


_NUMBERS = (
    "min_observation_min",
    "min_aldrete",
    "vitals_max_age_min",
    "sbp_tolerance_mmhg",
    "dbp_tolerance_mmhg",
    "hr_tolerance_pct",
    "min_spo2_pct",
)
_SOURCES = (
    "observation_source",
    "aldrete_source",
    "vitals_max_age_source",
    "vitals_tolerance_source",
    "spo2_source",
)


def parse_discharge_profiles(data: Mapping[str, Any], where: str) -> dict[str, DischargeCriteria]:
    """Validate a decoded discharge TOML document (one table per profile)."""
    out: dict[str, DischargeCriteria] = {}
    for name, t in data.items():
        pw = f"{where} [{name}]"
        check_keys(t, ("description", "observation_from", *_NUMBERS, *_SOURCES), (), pw)
        frm = get_str(t, "observation_from", pw)
        if frm not in ("infusion_end", "dose_start"):
            raise ProtocolError(f"{pw}: observation_from must be 'infusion_end' or 'dose_start'")
        nums = {k: get_number(t, k, pw, minimum=0) for k in _NUMBERS}
        if nums["min_aldrete"] > 10 or nums["min_aldrete"] != int(nums["min_aldrete"]):
            raise ProtocolError(f"{pw}: min_aldrete must be a whole number 0 to 10")
        out[name] = DischargeCriteria(
            profile=name,
            description=get_str(t, "description", pw),
            min_observation_min=nums["min_observation_min"],
            observation_from="infusion_end" if frm == "infusion_end" else "dose_start",
            min_aldrete=int(nums["min_aldrete"]),
            vitals_max_age_min=nums["vitals_max_age_min"],
            sbp_tolerance_mmhg=nums["sbp_tolerance_mmhg"],
            dbp_tolerance_mmhg=nums["dbp_tolerance_mmhg"],
            hr_tolerance_pct=nums["hr_tolerance_pct"],
            min_spo2_pct=nums["min_spo2_pct"],
            sources={k: get_str(t, k, pw) for k in _SOURCES},
        )
    return out


@cache
def _packaged_profiles() -> dict[str, DischargeCriteria]:
    return parse_discharge_profiles(read_packaged("discharge.toml"), "discharge.toml")


def discharge_criteria(
    profile: str = "iv_ketamine", path: str | Path | None = None
) -> DischargeCriteria:
    """A shipped profile (``iv_ketamine``, ``esketamine_rems``) or one from a clinic's file."""
    profiles = (
        _packaged_profiles()
        if path is None
        else parse_discharge_profiles(read_file(path), Path(path).name)
    )
    if profile not in profiles:
        raise NotFoundError(
            f"unknown discharge profile {profile!r}; known: {', '.join(sorted(profiles))}"
        )
    return profiles[profile]


@dataclass(frozen=True, slots=True)
class CriterionResult:
    """One criterion, met or not, with a short explanation (no patient identifiers)."""

    code: str
    met: bool
    detail: str


@dataclass(frozen=True, slots=True)
class DischargeEvaluation:
    """Every criterion evaluated at one time."""

    evaluated_at: datetime
    profile: str
    results: tuple[CriterionResult, ...]

    @property
    def all_met(self) -> bool:
        """Whether every criterion is met."""
        return all(r.met for r in self.results)

    @property
    def unmet(self) -> tuple[CriterionResult, ...]:
        """The criteria not met."""
        return tuple(r for r in self.results if not r.met)

    def result(self, code: str) -> CriterionResult:
        """The result for ``code``."""
        for r in self.results:
            if r.code == code:
                return r
        raise NotFoundError(f"no discharge criterion {code!r}")


def _minutes(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds() / S_PER_MIN


def evaluate_discharge(
    *,
    now: datetime,
    dose_started_at: datetime,
    infusion_ended_at: datetime | None,
    aldrete: ScaleScore | None,
    baseline: VitalSet | Mapping[VitalKind, VitalReading],
    latest: VitalSet | Mapping[VitalKind, VitalReading],
    escort_confirmed: bool,
    no_driving_acknowledged: bool,
    criteria: DischargeCriteria | None = None,
) -> DischargeEvaluation:
    """Evaluate every discharge criterion at ``now``.

    ``baseline`` is the pre-infusion vital set; ``latest`` the newest reading per kind
    (``VitalLog.latest_by_kind()``). ``infusion_ended_at`` None means the infusion has not
    ended, so the observation criterion is unmet.
    """
    c = discharge_criteria() if criteria is None else criteria
    require_aware(now, "now")
    require_aware(dose_started_at, "dose_started_at")
    if aldrete is not None and aldrete.scale_id != "modified_aldrete":
        raise InputError(
            f"aldrete: expected a modified Aldrete score, got {aldrete.scale_id!r}",
            field="aldrete",
        )
    base = {r.kind: r for r in baseline} if isinstance(baseline, VitalSet) else dict(baseline)
    last = {r.kind: r for r in latest} if isinstance(latest, VitalSet) else dict(latest)
    results: list[CriterionResult] = []

    anchor = dose_started_at if c.observation_from == "dose_start" else infusion_ended_at
    if anchor is None:
        results.append(CriterionResult("observation_time", False, "the infusion has not ended"))
    else:
        observed = _minutes(require_aware(anchor, "infusion_ended_at"), now)
        results.append(
            CriterionResult(
                "observation_time",
                observed >= c.min_observation_min,
                f"observed {observed:.0f} of {c.min_observation_min:g} min since "
                f"{c.observation_from.replace('_', ' ')}",
            )
        )

    if aldrete is None:
        results.append(CriterionResult("aldrete", False, "no modified Aldrete score recorded"))
    else:
        results.append(
            CriterionResult(
                "aldrete",
                aldrete.total >= c.min_aldrete,
                f"modified Aldrete {aldrete.total} (need >= {c.min_aldrete})",
            )
        )

    needed = (VitalKind.SBP, VitalKind.DBP, VitalKind.HR, VitalKind.SPO2)
    stale = [
        k.value
        for k in needed
        if k not in last or _minutes(last[k].measured_at, now) > c.vitals_max_age_min
    ]
    results.append(
        CriterionResult(
            "vitals_recent",
            not stale,
            f"all measured within the last {c.vitals_max_age_min:g} min"
            if not stale
            else f"missing or older than {c.vitals_max_age_min:g} min: {', '.join(stale)}",
        )
    )

    def near(code: str, kind: VitalKind, tol: float, pct: bool) -> CriterionResult:
        if kind not in base:
            return CriterionResult(code, False, f"no baseline {kind.value}")
        if kind not in last:
            return CriterionResult(code, False, f"no {kind.value} after the infusion")
        b, v = base[kind].value, last[kind].value
        allowed = tol * b / 100.0 if pct else tol
        unit = "%" if pct else "mmHg"
        return CriterionResult(
            code,
            abs(v - b) <= allowed,
            f"{kind.value} {v:g} vs baseline {b:g} (tolerance {tol:g} {unit})",
        )

    results.append(near("sbp_near_baseline", VitalKind.SBP, c.sbp_tolerance_mmhg, False))
    results.append(near("dbp_near_baseline", VitalKind.DBP, c.dbp_tolerance_mmhg, False))
    results.append(near("hr_near_baseline", VitalKind.HR, c.hr_tolerance_pct, True))

    spo2 = last.get(VitalKind.SPO2)
    results.append(
        CriterionResult("spo2", False, "no SpO2 after the infusion")
        if spo2 is None
        else CriterionResult(
            "spo2",
            spo2.value >= c.min_spo2_pct,
            f"SpO2 {spo2.value:g}% (need >= {c.min_spo2_pct:g})",
        )
    )
    results.append(
        CriterionResult(
            "escort",
            bool(escort_confirmed),
            "escort confirmed" if escort_confirmed else "no escort confirmed",
        )
    )
    results.append(
        CriterionResult(
            "no_driving",
            bool(no_driving_acknowledged),
            "no-driving acknowledged" if no_driving_acknowledged else "not acknowledged",
        )
    )
    return DischargeEvaluation(evaluated_at=now, profile=c.profile, results=tuple(results))


@dataclass(frozen=True, slots=True)
class DischargeDecision:
    """Who allowed the discharge, when, and whether unmet criteria were overridden."""

    evaluation: DischargeEvaluation
    decided_by: str
    decided_role: Role
    decided_at: datetime
    overridden: bool
    override_reason: str
    overridden_codes: tuple[str, ...]


def authorize_discharge(
    evaluation: DischargeEvaluation,
    actor: Actor,
    *,
    at: datetime,
    override_reason: str | None = None,
) -> DischargeDecision:
    """Allow discharge when every criterion is met, or on a physician's override with a reason.

    Raises StateError (criteria unmet, no override), AuthError (override by a non-physician)
    or InputError (empty reason).
    """
    require_role(actor, CLINICAL_ROLES, "discharge")
    require_aware(at, "at")
    unmet = tuple(r.code for r in evaluation.unmet)
    if not unmet:
        return DischargeDecision(evaluation, actor.user_id, actor.role, at, False, "", ())
    if override_reason is None:
        raise StateError(
            f"discharge: criteria not met ({', '.join(unmet)}); a physician may override with "
            "a reason"
        )
    if actor.role is not Role.PHYSICIAN:
        raise AuthError(
            "discharge override: only a physician may discharge before the criteria are met",
            field="actor.role",
        )
    reason = require_reason(override_reason, "override_reason")
    return DischargeDecision(evaluation, actor.user_id, actor.role, at, True, reason, unmet)
