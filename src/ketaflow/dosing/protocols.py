"""Treatment protocols as data: ``ketaflow/dosing/protocols/*.toml``.

A protocol names its dose (dose text for :func:`~ketaflow.pk.schedule.parse_dose`), care area
and standard concentration, dosing-weight policy, course, monitoring schedule, alarm thresholds
and titration rules, each table with its ``source``. :func:`load_protocol` reads one by name
(the file name without ``.toml``), :func:`list_protocols` reads all, :func:`load_protocol_file`
reads any path (a clinic's own protocol). Loading validates everything and raises
:class:`~ketaflow.errors.ProtocolError` naming the file, the table and the key: unknown keys,
missing keys, dose text that does not parse, a concentration the care area does not stock, a
dose or titration ceiling above a hard limit of the drug library, and in-session blood-pressure
or heart-rate rules whose thresholds are not the protocol's alarm thresholds.

The file format is documented in ``docs/dosing.md``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

from ketaflow.datafile import check_keys, read_toml
from ketaflow.dosing.body_size import DosingWeightRule
from ketaflow.dosing.library import DrugLibrary, LimitStatus, load_library
from ketaflow.dosing.titration import (
    BetweenSessionRule,
    EventKind,
    InSessionRule,
    SessionEvent,
    SessionOutcome,
    Suggestion,
    TitrationAction,
    TitrationBounds,
    TitrationDecision,
    decide_next_dose,
    parse_between_rule,
    parse_in_session_rule,
    suggest_in_session,
)
from ketaflow.errors import DoseTextError, InputError, ProtocolError
from ketaflow.pk.schedule import DoseInstruction, parse_dose
from ketaflow.units import MIN_PER_H

_TOP_KEYS: Final = {
    "name",
    "title",
    "version",
    "drug",
    "care_area",
    "indication",
    "evidence",
    "standard_concentration_mg_per_ml",
    "dose",
    "dosing_weight",
    "course",
    "monitoring",
    "alarms",
    "titration",
    "between_sessions",
    "in_session",
    "source",
}
_DOSE_KEYS: Final = {"text", "source", "rationale"}
_WEIGHT_KEYS: Final = {"policy", "cap_kg", "review_bmi_at_least", "source", "rationale"}
_COURSE_KEYS: Final = {"sessions", "span_days_min", "span_days_max", "source", "rationale"}
_MONITORING_KEYS: Final = {
    "vitals_during_infusion_every_min",
    "vitals_after_infusion_every_min",
    "dissociation_scale",
    "dissociation_at_min",
    "min_observation_after_infusion_min",
    "source",
    "rationale",
}
_ALARM_KEYS: Final = {
    "pre_dose_caution_sbp_mmhg",
    "pre_dose_caution_dbp_mmhg",
    "stop_sbp_mmhg",
    "stop_dbp_mmhg",
    "stop_confirm_readings",
    "stop_confirm_within_min",
    "emergency_sbp_mmhg",
    "emergency_dbp_mmhg",
    "hr_above_bpm",
    "hr_sustained_min",
    "source",
    "rationale",
}
_TITRATION_KEYS: Final = {
    "start_mg_per_kg",
    "step_mg_per_kg",
    "ceiling_mg_per_kg",
    "floor_mg_per_kg",
    "source",
    "rationale",
}
_SOURCE_KEYS: Final = {"citation", "reference", "evidence_note"}


@dataclass(frozen=True, slots=True)
class DosingWeightSpec:
    """The protocol's dosing-weight policy and when to ask the prescriber to review it."""

    rule: DosingWeightRule
    review_bmi_at_least: float | None
    source: str
    rationale: str


@dataclass(frozen=True, slots=True)
class Course:
    """How many sessions over how many days."""

    sessions: int
    span_days_min: float
    span_days_max: float
    source: str


@dataclass(frozen=True, slots=True)
class Monitoring:
    """When to take vitals and scales, and how long to observe after the infusion."""

    vitals_during_infusion_every_min: float
    vitals_after_infusion_every_min: float
    min_observation_after_infusion_min: float
    dissociation_scale: str | None
    dissociation_at_min: tuple[float, ...]
    source: str
    rationale: str = ""

    def vitals_times_min(self, infusion_end_min: float) -> tuple[float, ...]:
        """Vital-sign times from the start (baseline at 0) to the end of observation, min."""
        infusion_end_min = float(infusion_end_min)
        times = [0.0]
        t = self.vitals_during_infusion_every_min
        while t < infusion_end_min - 1e-9:
            times.append(t)
            t += self.vitals_during_infusion_every_min
        times.append(infusion_end_min)
        stop = infusion_end_min + self.min_observation_after_infusion_min
        t = infusion_end_min + self.vitals_after_infusion_every_min
        while t < stop - 1e-9:
            times.append(t)
            t += self.vitals_after_infusion_every_min
        times.append(stop)
        return tuple(sorted(set(round(x, 6) for x in times)))


@dataclass(frozen=True, slots=True)
class AlarmThresholds:
    """Blood-pressure and heart-rate thresholds the protocol's rules refer to."""

    pre_dose_caution_sbp_mmhg: float
    pre_dose_caution_dbp_mmhg: float
    stop_sbp_mmhg: float
    stop_dbp_mmhg: float
    stop_confirm_readings: int
    stop_confirm_within_min: float
    emergency_sbp_mmhg: float
    emergency_dbp_mmhg: float
    hr_above_bpm: float
    hr_sustained_min: float
    source: str
    rationale: str = ""


@dataclass(frozen=True, slots=True)
class Protocol:
    """A validated treatment protocol."""

    name: str
    title: str
    version: str
    drug: str
    care_area: str
    indication: str
    evidence: Literal["primary", "secondary"]
    standard_concentration_mg_per_ml: float
    dose_text: str
    dose_source: str
    instruction: DoseInstruction
    dosing_weight: DosingWeightSpec
    course: Course
    monitoring: Monitoring
    alarms: AlarmThresholds
    titration: TitrationBounds | None
    between_sessions: tuple[BetweenSessionRule, ...]
    in_session: tuple[InSessionRule, ...]
    source: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def session_dose_mg_per_kg(self) -> float | None:
        """The protocol dose per session, mg/kg (None when the dose text is in mg)."""
        return self.instruction.total() if self.instruction.per_kg else None

    def dose_text_for(self, mg_per_kg: float) -> str:
        """Dose text for a session dose of ``mg_per_kg`` over the protocol's duration."""
        if not (math.isfinite(mg_per_kg) and mg_per_kg > 0):
            raise InputError(f"mg_per_kg: expected a positive dose, got {mg_per_kg!r}")
        if self.instruction.kind == "bolus":
            return f"bolus {mg_per_kg:g} mg/kg at {self.instruction.start_min:g} min"
        text = f"{round(mg_per_kg, 6):g} mg/kg over {self.instruction.duration_min:g} min"
        if self.instruction.start_min > 0:
            text += f" from {self.instruction.start_min:g} min"
        return text

    def decide_next_dose(
        self, outcome: SessionOutcome, current_mg_per_kg: float
    ) -> TitrationDecision:
        """Apply the protocol's between-session rules (see :mod:`ketaflow.dosing.titration`)."""
        return decide_next_dose(
            outcome, current_mg_per_kg, rules=self.between_sessions, bounds=self.titration
        )

    def suggest(
        self, event: SessionEvent, *, current_rate_mg_per_h: float | None = None
    ) -> Suggestion:
        """Apply the protocol's in-session rules to ``event``."""
        return suggest_in_session(
            event, self.in_session, current_rate_mg_per_h=current_rate_mg_per_h
        )

    def planned_dose_mg_per_kg(self, session_number: int) -> float:
        """Session dose if every earlier session was tolerated without adequate response.

        This is the highest dose the rules can reach by session ``session_number`` (no safety
        event, response 0 %); the real dose follows the recorded outcomes.
        """
        if not isinstance(session_number, int) or session_number < 1:
            raise InputError(
                f"session: expected a session number >= 1, got {session_number!r}",
                field="session",
            )
        start = self.session_dose_mg_per_kg
        if start is None:
            raise InputError(
                f"protocol {self.name!r} doses in mg, not mg/kg; it has no per-kg plan",
                field="protocol",
            )
        dose = start
        for n in range(1, session_number):
            outcome = SessionOutcome(
                session_number=n,
                tolerated=True,
                response_pct=0.0,
                max_dissociation=math.nan,
                max_sbp_mmhg=math.nan,
                max_dbp_mmhg=math.nan,
                stop_threshold_crossed=False,
            )
            dose = self.decide_next_dose(outcome, dose).next_mg_per_kg
        return dose


# --- parsing -----------------------------------------------------------------------------------


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    check_keys(table, allowed, where, error=ProtocolError)


def _table(data: Mapping[str, Any], key: str, where: str, allowed: set[str]) -> Mapping[str, Any]:
    if key not in data:
        raise ProtocolError(f"{where}: missing required table [{key}]")
    value = data[key]
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: [{key}] must be a table")
    _check_keys(value, allowed, f"{where} [{key}]")
    return value


def _text(table: Mapping[str, Any], key: str, where: str) -> str:
    if key not in table:
        raise ProtocolError(f"{where}: missing required key {key!r}")
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError(f"{where}: {key!r} must be a non-empty string")
    return value.strip()


def _num(table: Mapping[str, Any], key: str, where: str, *, whole: bool = False) -> float:
    if key not in table:
        raise ProtocolError(f"{where}: missing required key {key!r}")
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(f"{where}: {key!r} must be a number, got {value!r}")
    if value <= 0:
        raise ProtocolError(f"{where}: {key!r} must be > 0, got {value!r}")
    if whole and not float(value).is_integer():
        raise ProtocolError(f"{where}: {key!r} must be a whole number, got {value!r}")
    return float(value)


def _rules(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    raw = data.get(key, [])
    if not isinstance(raw, list):
        raise ProtocolError(f"{where}: [[{key}]] must be an array of tables")
    return raw


def _check_against_library(
    name: str,
    instruction: DoseInstruction,
    per_kg_doses: Sequence[float],
    care_area: str,
    library: DrugLibrary,
    where: str,
) -> None:
    area = library.care_area(care_area)
    for dose in per_kg_doses:
        if instruction.kind == "bolus":
            values = {"bolus_mg_per_kg": dose}
        else:
            values = {
                "dose_mg_per_kg": dose,
                "rate_mg_per_kg_per_h": dose / instruction.duration_min * MIN_PER_H,
                "duration_min": instruction.duration_min,
            }
        for limit_name, value in values.items():
            lim = area.limit(limit_name)
            if lim is None:
                continue
            if limit_name == "bolus_mg_per_kg" and not lim.allowed:
                raise ProtocolError(f"{where}: the {area.label} does not allow boluses")
            status, bound = lim.status_of(value)
            if status is LimitStatus.HARD_BREACH:
                raise ProtocolError(
                    f"{where}: protocol {name!r} reaches {value:.4g} {lim.unit} ({limit_name}), "
                    f"{bound} of the drug library {library.version}"
                )


def _check_alarm_refs(rules: Sequence[InSessionRule], alarms: AlarmThresholds, where: str) -> None:
    allowed = {
        "sbp_above": {alarms.stop_sbp_mmhg, alarms.emergency_sbp_mmhg},
        "dbp_above": {alarms.stop_dbp_mmhg, alarms.emergency_dbp_mmhg},
        "hr_above": {alarms.hr_above_bpm},
    }
    for rule in rules:
        if rule.event is EventKind.INTENSITY:
            continue
        for key, value in rule.when.items():
            if key in allowed and value not in allowed[key]:
                shown = " or ".join(f"{v:g}" for v in sorted(allowed[key]))
                raise ProtocolError(
                    f"{where} [[in_session]] {rule.id!r}: {key} = {value:g} is not one of the "
                    f"protocol's alarm thresholds ({shown}); change [alarms] or the rule"
                )


def parse_protocol(
    data: Mapping[str, Any],
    *,
    name: str,
    where: str,
    library: DrugLibrary | None = None,
) -> Protocol:
    """Validate a decoded protocol document (see :mod:`ketaflow.dosing.protocols`)."""
    lib = library if library is not None else load_library()
    _check_keys(data, _TOP_KEYS, where)
    declared = _text(data, "name", where)
    if declared != name:
        raise ProtocolError(f"{where}: name {declared!r} must match the file name {name!r}")
    drug = _text(data, "drug", where).lower()
    if drug != lib.drug:
        raise ProtocolError(f"{where}: drug {drug!r} has no entry in the drug library")
    care_area = _text(data, "care_area", where)
    try:
        area = lib.care_area(care_area)
    except InputError as exc:
        raise ProtocolError(f"{where}: {exc.message}") from None
    evidence = _text(data, "evidence", where)
    if evidence not in ("primary", "secondary"):
        raise ProtocolError(f"{where}: evidence must be 'primary' or 'secondary', got {evidence!r}")
    conc = _num(data, "standard_concentration_mg_per_ml", where)
    if not area.allows_concentration(conc):
        raise ProtocolError(
            f"{where}: standard_concentration_mg_per_ml {conc:g} is not a standard concentration "
            f"of the {area.label}"
        )

    dose_t = _table(data, "dose", where, _DOSE_KEYS)
    dose_text = _text(dose_t, "text", f"{where} [dose]")
    dose_source = _text(dose_t, "source", f"{where} [dose]")
    try:
        instruction = parse_dose(dose_text)
    except DoseTextError as exc:
        raise ProtocolError(f"{where} [dose]: {exc.message}") from None

    wt = _table(data, "dosing_weight", where, _WEIGHT_KEYS)
    ww = f"{where} [dosing_weight]"
    cap = _num(wt, "cap_kg", ww) if "cap_kg" in wt else None
    try:
        rule = DosingWeightRule.parse(_text(wt, "policy", ww), cap)
    except InputError as exc:
        raise ProtocolError(f"{ww}: {exc.message}") from None
    dosing_weight = DosingWeightSpec(
        rule=rule,
        review_bmi_at_least=_num(wt, "review_bmi_at_least", ww)
        if "review_bmi_at_least" in wt
        else None,
        source=_text(wt, "source", ww),
        rationale=_text(wt, "rationale", ww),
    )

    ct = _table(data, "course", where, _COURSE_KEYS)
    cw = f"{where} [course]"
    course = Course(
        sessions=int(_num(ct, "sessions", cw, whole=True)),
        span_days_min=_num(ct, "span_days_min", cw),
        span_days_max=_num(ct, "span_days_max", cw),
        source=_text(ct, "source", cw),
    )
    if course.span_days_min > course.span_days_max:
        raise ProtocolError(f"{cw}: span_days_min must not exceed span_days_max")

    mt = _table(data, "monitoring", where, _MONITORING_KEYS)
    mw = f"{where} [monitoring]"
    scale = mt.get("dissociation_scale")
    times = mt.get("dissociation_at_min")
    if (scale is None) != (times is None):
        raise ProtocolError(f"{mw}: give dissociation_scale and dissociation_at_min together")
    if scale is not None and (not isinstance(scale, str) or not scale.strip()):
        raise ProtocolError(f"{mw}: dissociation_scale must be a scale name such as 'CADSS'")
    if times is not None and (
        not isinstance(times, list)
        or not times
        or any(isinstance(t, bool) or not isinstance(t, int | float) or t < 0 for t in times)
    ):
        raise ProtocolError(f"{mw}: dissociation_at_min must be a list of times >= 0 min")
    monitoring = Monitoring(
        vitals_during_infusion_every_min=_num(mt, "vitals_during_infusion_every_min", mw),
        vitals_after_infusion_every_min=_num(mt, "vitals_after_infusion_every_min", mw),
        min_observation_after_infusion_min=_num(mt, "min_observation_after_infusion_min", mw),
        dissociation_scale=None if scale is None else scale.strip(),
        dissociation_at_min=tuple(float(t) for t in times or ()),
        source=_text(mt, "source", mw),
        rationale=str(mt.get("rationale", "")),
    )

    at = _table(data, "alarms", where, _ALARM_KEYS)
    aw = f"{where} [alarms]"
    alarms = AlarmThresholds(
        pre_dose_caution_sbp_mmhg=_num(at, "pre_dose_caution_sbp_mmhg", aw),
        pre_dose_caution_dbp_mmhg=_num(at, "pre_dose_caution_dbp_mmhg", aw),
        stop_sbp_mmhg=_num(at, "stop_sbp_mmhg", aw),
        stop_dbp_mmhg=_num(at, "stop_dbp_mmhg", aw),
        stop_confirm_readings=int(_num(at, "stop_confirm_readings", aw, whole=True)),
        stop_confirm_within_min=_num(at, "stop_confirm_within_min", aw),
        emergency_sbp_mmhg=_num(at, "emergency_sbp_mmhg", aw),
        emergency_dbp_mmhg=_num(at, "emergency_dbp_mmhg", aw),
        hr_above_bpm=_num(at, "hr_above_bpm", aw),
        hr_sustained_min=_num(at, "hr_sustained_min", aw),
        source=_text(at, "source", aw),
        rationale=str(at.get("rationale", "")),
    )
    if not (
        alarms.pre_dose_caution_sbp_mmhg < alarms.stop_sbp_mmhg <= alarms.emergency_sbp_mmhg
        and alarms.pre_dose_caution_dbp_mmhg < alarms.stop_dbp_mmhg <= alarms.emergency_dbp_mmhg
    ):
        raise ProtocolError(f"{aw}: thresholds must rise: pre-dose caution < stop <= emergency")

    bounds: TitrationBounds | None = None
    if "titration" in data:
        tt = _table(data, "titration", where, _TITRATION_KEYS)
        tw = f"{where} [titration]"
        bounds = TitrationBounds(
            start_mg_per_kg=_num(tt, "start_mg_per_kg", tw),
            step_mg_per_kg=_num(tt, "step_mg_per_kg", tw),
            ceiling_mg_per_kg=_num(tt, "ceiling_mg_per_kg", tw),
            floor_mg_per_kg=_num(tt, "floor_mg_per_kg", tw),
            source=_text(tt, "source", tw),
            rationale=str(tt.get("rationale", "")),
        )
        if not instruction.per_kg:
            raise ProtocolError(f"{tw}: titration needs a per-kg dose text (mg/kg or mg/kg/h)")
        if not (bounds.floor_mg_per_kg <= bounds.start_mg_per_kg <= bounds.ceiling_mg_per_kg):
            raise ProtocolError(
                f"{tw}: need floor_mg_per_kg <= start_mg_per_kg <= ceiling_mg_per_kg"
            )
        if not math.isclose(bounds.start_mg_per_kg, instruction.total(), rel_tol=1e-9):
            raise ProtocolError(
                f"{tw}: start_mg_per_kg {bounds.start_mg_per_kg:g} differs from the [dose] text "
                f"({instruction.total():g} mg/kg per session)"
            )

    between = tuple(
        parse_between_rule(r, f"{where} [[between_sessions]] #{i + 1}")
        for i, r in enumerate(_rules(data, "between_sessions", where))
    )
    if bounds is None:
        for r in between:
            if r.action is not TitrationAction.HOLD:
                raise ProtocolError(
                    f"{where} [[between_sessions]] {r.id!r}: a protocol without [titration] "
                    "can only 'hold'"
                )
    in_session = tuple(
        parse_in_session_rule(r, f"{where} [[in_session]] #{i + 1}")
        for i, r in enumerate(_rules(data, "in_session", where))
    )
    for rules_ in (between, in_session):
        ids = [r.id for r in rules_]
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            raise ProtocolError(f"{where}: duplicate rule id {sorted(dupes)[0]!r}")
    _check_alarm_refs(in_session, alarms, where)

    if instruction.per_kg:
        doses = [instruction.total()]
        if bounds is not None:
            doses.append(bounds.ceiling_mg_per_kg)
        _check_against_library(name, instruction, doses, care_area, lib, where)

    src = data.get("source", {})
    if not isinstance(src, dict):
        raise ProtocolError(f"{where}: [source] must be a table")
    _check_keys(src, _SOURCE_KEYS, f"{where} [source]")
    _text(src, "citation", f"{where} [source]")
    return Protocol(
        name=name,
        title=_text(data, "title", where),
        version=_text(data, "version", where),
        drug=drug,
        care_area=area.name,
        indication=_text(data, "indication", where),
        evidence="primary" if evidence == "primary" else "secondary",
        standard_concentration_mg_per_ml=conc,
        dose_text=dose_text,
        dose_source=dose_source,
        instruction=instruction,
        dosing_weight=dosing_weight,
        course=course,
        monitoring=monitoring,
        alarms=alarms,
        titration=bounds,
        between_sessions=between,
        in_session=in_session,
        source=MappingProxyType({k: str(v) for k, v in src.items()}),
    )


def load_protocol_file(path: str | Path, *, library: DrugLibrary | None = None) -> Protocol:
    """Read and validate a protocol TOML file; its ``name`` must equal the file name."""
    p = Path(path)
    data = read_toml(p, what="protocol file", error=ProtocolError)
    return parse_protocol(data, name=p.stem, where=p.name, library=library)


def _protocol_files() -> dict[str, Any]:
    root = resources.files("ketaflow.dosing") / "protocols"
    return {f.name[:-5]: f for f in root.iterdir() if f.name.endswith(".toml")}


def load_protocol(name: str) -> Protocol:
    """A shipped protocol by name (e.g. ``"depression-standard"``), case-insensitive."""
    files = _protocol_files()
    key = name.strip().lower() if isinstance(name, str) else ""
    if key not in files:
        known = ", ".join(sorted(files))
        raise ProtocolError(
            f"protocol: unknown protocol {name!r}; choose one of {known}", field="protocol"
        )
    data = tomllib.loads(files[key].read_text(encoding="utf-8"))
    return parse_protocol(data, name=key, where=files[key].name)


def list_protocols() -> list[Protocol]:
    """Every shipped protocol, sorted by name."""
    return [load_protocol(name) for name in sorted(_protocol_files())]
