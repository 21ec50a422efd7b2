"""The documentation covers every rule, code and scale, and docstring examples run."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

from ketaflow.clinical.alarms import AlarmEventKind, SuggestedAction, load_alarm_rules
from ketaflow.clinical.discharge import CRITERIA_CODES
from ketaflow.clinical.scales import scale_definitions
from ketaflow.clinical.screening import default_screening_rules
from ketaflow.clinical.session import TRANSITIONS, SessionState

DOC = (Path(__file__).parents[3] / "docs" / "clinical.md").read_text(encoding="utf-8")


def test_every_alarm_code_is_documented_with_its_source() -> None:
    for rule in load_alarm_rules().rules:
        line = next((ln for ln in DOC.splitlines() if f"`{rule.spec.code}`" in ln), None)
        assert line is not None, rule.spec.code
        assert rule.spec.source in line, rule.spec.code


def test_event_kinds_actions_states_and_transitions_are_documented() -> None:
    for kind in AlarmEventKind:
        assert f"`{kind.value}`" in DOC
    for action in SuggestedAction:
        assert f"`{action.value}`" in DOC
    for state in SessionState:
        assert state.value in DOC
    for t in TRANSITIONS:
        assert f"| `{t.event.value}` | {t.source.value} | {t.target.value} |" in DOC


def test_screening_discharge_and_scales_are_documented() -> None:
    for code in default_screening_rules().criteria:
        assert f"`{code}`" in DOC, code
    for code in CRITERIA_CODES:
        assert f"`{code}`" in DOC, code
    for sid, d in scale_definitions().items():
        row = next(ln for ln in DOC.splitlines() if f"(`{sid}`)" in ln)
        assert ("scoring only" in row) is (not d.ships_text), sid


@pytest.mark.parametrize(
    "module",
    [
        "ketaflow.clinical.clock",
        "ketaflow.clinical.vitals",
        "ketaflow.clinical.scales",
        "ketaflow.clinical.patient",
        "ketaflow.clinical.course",
    ],
)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0


def test_public_surface_is_exactly_all() -> None:
    import ketaflow.clinical as pkg

    public = {n for n in dir(pkg) if not n.startswith("_")}
    modules = {
        "actors",
        "alarms",
        "checkins",
        "clock",
        "course",
        "discharge",
        "infusion",
        "patient",
        "scales",
        "screening",
        "session",
        "vitals",
        "annotations",
    }
    assert public - modules == set(pkg.__all__)
