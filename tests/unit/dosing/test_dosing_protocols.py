"""Protocol files: content of the shipped protocols and validation of malformed ones."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from ketaflow.dosing.body_size import DosingWeightPolicy
from ketaflow.dosing.protocols import (
    list_protocols,
    load_protocol,
    load_protocol_file,
    parse_protocol,
)
from ketaflow.errors import ProtocolError
from ketaflow.pk.schedule import parse_dose


def _raw(name: str) -> dict[str, Any]:
    f = resources.files("ketaflow.dosing") / "protocols" / f"{name}.toml"
    return tomllib.loads(f.read_text(encoding="utf-8"))


def test_shipped_protocols() -> None:
    protocols = {p.name: p for p in list_protocols()}
    assert set(protocols) == {"depression-standard", "depression-titration", "pain-crps"}
    for p in protocols.values():
        assert p.source["citation"]
        assert p.dose_source
        assert p.monitoring.source
        assert p.alarms.source
        assert p.dosing_weight.source
        assert p.course.source
        for rule in (*p.between_sessions, *p.in_session):
            assert rule.source
            assert rule.rationale
    assert protocols["pain-crps"].evidence == "secondary"
    assert protocols["depression-standard"].evidence == "primary"


def test_depression_standard_content() -> None:
    p = load_protocol("Depression-Standard")
    assert p.dose_text == "0.5 mg/kg over 40 min"
    assert p.session_dose_mg_per_kg == pytest.approx(0.5)
    assert p.care_area == "depression_suite"
    assert p.standard_concentration_mg_per_ml == 1.0
    assert p.dosing_weight.rule.policy is DosingWeightPolicy.ACTUAL
    assert p.dosing_weight.review_bmi_at_least == 30.0
    assert (p.course.sessions, p.course.span_days_min, p.course.span_days_max) == (6, 12.0, 21.0)
    m = p.monitoring
    assert (m.vitals_during_infusion_every_min, m.vitals_after_infusion_every_min) == (10.0, 15.0)
    assert m.dissociation_scale == "CADSS"
    assert m.dissociation_at_min == (40.0,)
    assert m.min_observation_after_infusion_min == 60.0
    assert m.vitals_times_min(40.0) == (0, 10, 20, 30, 40, 55, 70, 85, 100)
    a = p.alarms
    assert (a.stop_sbp_mmhg, a.stop_dbp_mmhg, a.stop_confirm_readings) == (180.0, 110.0, 2)
    assert (a.emergency_sbp_mmhg, a.emergency_dbp_mmhg) == (200.0, 120.0)
    assert (a.pre_dose_caution_sbp_mmhg, a.pre_dose_caution_dbp_mmhg) == (140.0, 90.0)
    assert p.titration is None


def test_pain_crps_content() -> None:
    p = load_protocol("pain-crps")
    assert p.care_area == "pain_suite"
    assert p.session_dose_mg_per_kg == pytest.approx(1.4, abs=1e-12)  # 0.35 mg/kg/h x 4 h
    assert p.instruction.duration_min == 240.0
    assert p.course.sessions == 10
    assert p.monitoring.dissociation_scale is None
    assert "secondary" in p.source["evidence_note"].lower()


def test_titration_protocol_content() -> None:
    p = load_protocol("depression-titration")
    t = p.titration
    assert t is not None
    assert (t.start_mg_per_kg, t.step_mg_per_kg, t.ceiling_mg_per_kg, t.floor_mg_per_kg) == (
        0.5,
        0.1,
        0.75,
        0.1,
    )
    planned = [p.planned_dose_mg_per_kg(n) for n in range(1, 8)]
    assert planned == pytest.approx([0.5, 0.5, 0.6, 0.7, 0.75, 0.75, 0.75], abs=1e-12)
    text = p.dose_text_for(0.6)
    assert text == "0.6 mg/kg over 40 min"
    assert parse_dose(text).total() == pytest.approx(0.6)


def _expect_error(name: str, mutate: Any, fragment: str) -> None:
    data = copy.deepcopy(_raw(name))
    mutate(data)
    with pytest.raises(ProtocolError, match=fragment):
        parse_protocol(data, name=name, where=f"{name}.toml")


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.update(colour="red"), r"unknown key 'colour'"),
        (lambda d: d["monitoring"].update(bp_every=5), r"\[monitoring\]: unknown key 'bp_every'"),
        (lambda d: d.pop("dose"), r"missing required table \[dose\]"),
        (lambda d: d["alarms"].pop("source"), r"\[alarms\]: missing required key 'source'"),
        (lambda d: d["alarms"].pop("stop_sbp_mmhg"), r"missing required key 'stop_sbp_mmhg'"),
        (lambda d: d["dose"].update(text="0.5 mg/kg"), r"\[dose\]: dose '0.5 mg/kg'"),
        (
            lambda d: d.update(standard_concentration_mg_per_ml=10.0),
            "not a standard concentration",
        ),
        (lambda d: d.update(care_area="icu"), "unknown care area 'icu'"),
        (lambda d: d.update(name="other"), "must match the file name"),
        (lambda d: d.update(evidence="anecdote"), "evidence must be 'primary' or 'secondary'"),
        (lambda d: d["dose"].update(text="1.6 mg/kg over 40 min"), "above the hard maximum"),
        (lambda d: d["dosing_weight"].update(policy="lean"), "expected one of actual"),
        (
            lambda d: d["in_session"][0]["when"].update(sbp_above=175.0),
            "not one of the protocol's alarm thresholds",
        ),
        (
            lambda d: d["in_session"][0]["when"].update(temperature_above=38.0),
            "unknown key 'temperature_above'",
        ),
        (lambda d: d["in_session"][0].update(action="panic"), "action must be one of"),
        (lambda d: d["in_session"][0].update(event="spo2"), "event must be one of"),
        (
            lambda d: d["between_sessions"][0].update(action="lower"),
            "without \\[titration\\] can only 'hold'",
        ),
        (
            lambda d: d["between_sessions"].append(dict(d["between_sessions"][0])),
            "duplicate rule id",
        ),
        (lambda d: d["between_sessions"][0].pop("source"), "missing required key 'source'"),
        (lambda d: d["alarms"].update(stop_sbp_mmhg=130.0), "thresholds must rise"),
        (lambda d: d["course"].update(sessions=6.5), "whole number"),
    ],
)
def test_malformed_standard_protocol(mutate: Any, fragment: str) -> None:
    _expect_error("depression-standard", mutate, fragment)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d["titration"].update(ceiling_mg_per_kg=1.6), "above the hard maximum"),
        (lambda d: d["titration"].update(start_mg_per_kg=0.6), "differs from the \\[dose\\] text"),
        (lambda d: d["titration"].update(floor_mg_per_kg=0.6), "floor_mg_per_kg <= start"),
        (
            lambda d: d["between_sessions"][0]["when"].update(tolerated="yes"),
            "'tolerated' must be true or false",
        ),
        (
            lambda d: d["between_sessions"][0]["when"].update(session_at_least=1.5),
            "whole number",
        ),
        (lambda d: d["between_sessions"][0].update(when={}), "non-empty table of conditions"),
        (lambda d: d["in_session"][-1].pop("slow_by_pct"), "needs slow_by_pct"),
        (lambda d: d["in_session"][0].update(slow_by_pct=10.0), "only for 'slow' rules"),
    ],
)
def test_malformed_titration_protocol(mutate: Any, fragment: str) -> None:
    _expect_error("depression-titration", mutate, fragment)


def test_unknown_protocol_name() -> None:
    with pytest.raises(ProtocolError, match="choose one of depression-standard"):
        load_protocol("ketamine-party")


def test_clinic_protocol_file(tmp_path: Path) -> None:
    f = resources.files("ketaflow.dosing") / "protocols" / "depression-standard.toml"
    text = f.read_text(encoding="utf-8").replace(
        'name = "depression-standard"', 'name = "clinic-depression"'
    )
    path = tmp_path / "clinic-depression.toml"
    path.write_text(text, encoding="utf-8")
    assert load_protocol_file(path).name == "clinic-depression"
    path.write_text("name = ", encoding="utf-8")
    with pytest.raises(ProtocolError, match="not valid TOML"):
        load_protocol_file(path)
