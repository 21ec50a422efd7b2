"""Drug library: data file provenance, soft/hard limits, overrides, refused concentrations."""

from __future__ import annotations

import copy
import inspect
import tomllib
from importlib import resources
from typing import Any

import pytest
from dosing_helpers import NOW, make_order

from ketaflow.dosing.library import (
    LimitStatus,
    Override,
    check_order,
    evaluate_order,
    load_library,
    load_library_file,
    parse_library,
)
from ketaflow.errors import AuthError, HardLimitError, InputError, ProtocolError, SoftLimitError

PHYSICIAN = Override("BMI 19, prior sessions tolerated at 1.0 mg/kg", "dr.a", "physician", NOW)


def _raw() -> dict[str, Any]:
    f = resources.files("ketaflow.dosing") / "data" / "drug_library.toml"
    return tomllib.loads(f.read_text(encoding="utf-8"))


def _numbers_without_source(table: dict[str, Any], path: str) -> list[str]:
    """Paths of tables that hold numbers but no 'source' key."""
    missing = []
    has_number = any(
        (isinstance(v, int | float) and not isinstance(v, bool))
        or (isinstance(v, list) and v and isinstance(v[0], int | float))
        for k, v in table.items()
        if k != "schema"
    )
    if has_number and "source" not in table and path:
        missing.append(path)
    for k, v in table.items():
        if isinstance(v, dict):
            missing += _numbers_without_source(v, f"{path}.{k}" if path else k)
    return missing


def test_every_number_in_the_library_file_has_a_source() -> None:
    assert _numbers_without_source(_raw(), "") == []


def test_library_metadata_and_areas() -> None:
    lib = load_library()
    assert lib.version == "2025.1"
    assert lib.effective_date.isoformat() == "2025-01-01"
    assert lib.drug == "ketamine"
    assert set(lib.care_areas) == {"depression_suite", "pain_suite"}
    assert lib.refused_iv_mg_per_ml == (100.0,)
    dep = lib.care_area("Depression-Suite")
    assert dep.concentrations_mg_per_ml == (1.0,)
    assert lib.care_area("pain_suite").concentrations_mg_per_ml == (1.0, 2.0)
    for area in lib.care_areas.values():
        for lim in area.limits.values():
            assert lim.source
            if lim.allowed:
                assert lim.rationale


def test_unknown_care_area() -> None:
    with pytest.raises(InputError, match="unknown care area 'icu'"):
        load_library().care_area("icu")


def test_standard_order_passes_everything() -> None:
    result = check_order(make_order(), "depression_suite", 1.0)
    assert result.passed
    assert [c.name for c in result.checks] == [
        "concentration_mg_per_ml",
        "dose_mg_per_kg",
        "rate_mg_per_kg_per_h",
        "rate_mg_per_h",
        "total_mg",
        "duration_min",
    ]
    assert all(c.status is LimitStatus.PASSED for c in result.checks)


def test_limit_boundary_passes_despite_float_rounding() -> None:
    # 1.0 mg/kg over 40 min is 1.5000000000000002 mg/kg/h in floating point; limit is 1.5.
    result = evaluate_order(make_order("1 mg/kg over 40 min"), "depression_suite", 1.0)
    assert result.passed


def test_soft_breach_needs_a_physician_override() -> None:
    order = make_order("1.2 mg/kg over 40 min")
    result = evaluate_order(order, "depression_suite", 1.0)
    soft = {c.name for c in result.soft_breaches}
    assert soft == {"dose_mg_per_kg", "rate_mg_per_kg_per_h"}
    assert not result.hard_breaches
    with pytest.raises(SoftLimitError, match="physician's override"):
        check_order(order, "depression_suite", 1.0)
    accepted = check_order(order, "depression_suite", 1.0, override=PHYSICIAN)
    assert accepted.override is PHYSICIAN
    assert accepted.to_dict()["override"]["by_user"] == "dr.a"
    nurse = Override("patient asked for a stronger dose", "rn.b", "nurse")
    with pytest.raises(AuthError, match="prescriber"):
        check_order(order, "depression_suite", 1.0, override=nurse)


@pytest.mark.parametrize(
    ("reason", "user", "role"),
    [
        ("ok", "dr.a", "physician"),
        ("documented reason", " ", "physician"),
        ("a long reason", "u", ""),
    ],
)
def test_override_must_be_documented(reason: str, user: str, role: str) -> None:
    with pytest.raises(InputError):
        Override(reason, user, role)


@pytest.mark.parametrize(
    ("text", "weight", "area", "conc", "hard_name"),
    [
        ("1.6 mg/kg over 40 min", 70.0, "depression_suite", 1.0, "dose_mg_per_kg"),
        ("0.5 mg/kg over 10 min", 70.0, "depression_suite", 1.0, "rate_mg_per_kg_per_h"),
        ("1.4 mg/kg over 60 min", 170.0, "depression_suite", 1.0, "total_mg"),
        ("0.5 mg/kg over 40 min", 70.0, "depression_suite", 100.0, "concentration_mg_per_ml"),
        ("0.35 mg/kg/h for 4 h", 70.0, "pain_suite", 100.0, "concentration_mg_per_ml"),
        ("0.5 mg/kg over 40 min", 70.0, "depression_suite", 2.0, "concentration_mg_per_ml"),
        ("0.5 mg/kg over 40 min", 70.0, "depression_suite", 10.0, "concentration_mg_per_ml"),
        ("bolus 0.1 mg/kg", 70.0, "depression_suite", 1.0, "bolus_mg_per_kg"),
        ("bolus 0.4 mg/kg", 70.0, "pain_suite", 1.0, "bolus_mg_per_kg"),
        ("2.5 mg/kg/h for 1 h", 70.0, "pain_suite", 1.0, "rate_mg_per_kg_per_h"),
    ],
)
def test_hard_breach_can_never_be_overridden(
    text: str, weight: float, area: str, conc: float, hard_name: str
) -> None:
    order = make_order(text, weight_kg=weight, height_cm=190.0)
    result = evaluate_order(order, area, conc)
    assert hard_name in {c.name for c in result.hard_breaches}
    for override in (None, PHYSICIAN):
        with pytest.raises(HardLimitError, match="Hard limits cannot be overridden"):
            check_order(order, area, conc, override=override)


def test_no_parameter_can_bypass_a_hard_limit() -> None:
    params = set(inspect.signature(check_order).parameters)
    assert params == {"order", "care_area", "concentration_mg_per_ml", "override", "library"}


def test_pain_suite_differences() -> None:
    crps = make_order("0.35 mg/kg/h for 4 h")
    assert check_order(crps, "pain_suite", 2.0).passed
    soft_bolus = evaluate_order(make_order("bolus 0.3 mg/kg"), "pain_suite", 1.0)
    assert [c.name for c in soft_bolus.soft_breaches] == ["bolus_mg_per_kg"]


def test_slow_depression_infusion_is_a_soft_duration_breach() -> None:
    result = evaluate_order(make_order("0.5 mg/kg over 100 min"), "depression_suite", 1.0)
    # 0.3 mg/kg/h equals the soft minimum rate and passes; only the duration is soft.
    assert [c.name for c in result.soft_breaches] == ["duration_min"]
    assert "above the soft maximum 60 min" in result.soft_breaches[0].message


def test_unknown_drug_is_a_hard_breach() -> None:
    order = make_order(drug="esketamine")
    result = evaluate_order(order, "depression_suite", 1.0)
    assert result.hard_breaches[0].name == "drug"


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.update(colour="red"), "unknown key 'colour'"),
        (lambda d: d["presentations"].pop("source"), "missing required key 'source'"),
        (
            lambda d: d["care_areas"]["depression_suite"]["limits"]["dose_mg_per_kg"].pop("source"),
            "missing required key 'source'",
        ),
        (
            lambda d: d["care_areas"]["depression_suite"]["limits"]["dose_mg_per_kg"].update(
                hard_max=0.8
            ),
            "hard_min <= soft_min <= soft_max <= hard_max",
        ),
        (
            lambda d: d["care_areas"]["pain_suite"]["concentrations"].update(
                allowed_mg_per_ml=[1.0, 100.0]
            ),
            "refused for IV use",
        ),
        (
            lambda d: d["care_areas"]["pain_suite"]["limits"].update(speed={"soft_max": 1.0}),
            "unknown key 'speed'",
        ),
        (lambda d: d.update(schema=2), "unsupported schema"),
        (
            lambda d: d["care_areas"]["pain_suite"]["limits"]["total_mg"].update(soft_max=-1),
            "must be > 0",
        ),
    ],
)
def test_malformed_library_is_refused(mutate: Any, fragment: str) -> None:
    data = copy.deepcopy(_raw())
    mutate(data)
    with pytest.raises(ProtocolError, match=fragment):
        parse_library(data)


def test_library_file_loader(tmp_path: Any) -> None:
    f = resources.files("ketaflow.dosing") / "data" / "drug_library.toml"
    path = tmp_path / "clinic.toml"
    path.write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    assert load_library_file(path).version == "2025.1"
    path.write_text("version = [", encoding="utf-8")
    with pytest.raises(ProtocolError, match="not valid TOML"):
        load_library_file(path)
    with pytest.raises(ProtocolError, match="cannot read"):
        load_library_file(tmp_path / "missing.toml")
