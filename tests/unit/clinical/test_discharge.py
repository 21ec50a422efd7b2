from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ketaflow.clinical.actors import Actor, Role
from ketaflow.clinical.discharge import (
    CRITERIA_CODES,
    authorize_discharge,
    discharge_criteria,
    evaluate_discharge,
)
from ketaflow.clinical.scales import score_modified_aldrete, score_phq9
from ketaflow.errors import AuthError, InputError, NotFoundError, ProtocolError, StateError

from ._helpers import T0, vitals

END = T0 + timedelta(minutes=40)
ALDRETE_10 = score_modified_aldrete(
    activity=2, respiration=2, circulation=2, consciousness=2, oxygen_saturation=2
)
ALDRETE_8 = score_modified_aldrete(
    activity=2, respiration=2, circulation=1, consciousness=1, oxygen_saturation=2
)
BASE = vitals(T0 - timedelta(minutes=5), sbp=130, dbp=80, hr=70, spo2=98)


def evaluate(now_min: float = 100, **kw: object):  # type: ignore[no-untyped-def]  # test helper
    now = T0 + timedelta(minutes=now_min)
    args: dict[str, object] = dict(
        now=now,
        dose_started_at=T0,
        infusion_ended_at=END,
        aldrete=ALDRETE_10,
        baseline=BASE,
        latest=vitals(now - timedelta(minutes=5), sbp=140, dbp=85, hr=80, spo2=97),
        escort_confirmed=True,
        no_driving_acknowledged=True,
    )
    args.update(kw)
    return evaluate_discharge(**args)  # type: ignore[arg-type]  # assembled above


def test_all_met() -> None:
    ev = evaluate()
    assert ev.all_met
    assert [r.code for r in ev.results] == list(CRITERIA_CODES)


@pytest.mark.parametrize(
    ("kw", "unmet"),
    [
        ({"now_min": 99}, {"observation_time"}),  # 59 min after the end
        ({"infusion_ended_at": None}, {"observation_time"}),
        ({"aldrete": ALDRETE_8}, {"aldrete"}),
        ({"aldrete": None}, {"aldrete"}),
        ({"escort_confirmed": False}, {"escort"}),
        ({"no_driving_acknowledged": False}, {"no_driving"}),
        (
            {"latest": vitals(T0 + timedelta(minutes=95), sbp=151, dbp=80, hr=70, spo2=98)},
            {"sbp_near_baseline"},
        ),  # 21 mmHg above baseline
        (
            {"latest": vitals(T0 + timedelta(minutes=95), sbp=130, dbp=101, hr=70, spo2=98)},
            {"dbp_near_baseline"},
        ),
        (
            {"latest": vitals(T0 + timedelta(minutes=95), sbp=130, dbp=80, hr=85, spo2=98)},
            {"hr_near_baseline"},
        ),  # 70 + 20% = 84
        (
            {"latest": vitals(T0 + timedelta(minutes=95), sbp=130, dbp=80, hr=70, spo2=91)},
            {"spo2"},
        ),
        (
            {"latest": vitals(T0 + timedelta(minutes=80), sbp=130, dbp=80, hr=70, spo2=98)},
            {"vitals_recent"},
        ),  # 20 min old
    ],
)
def test_each_criterion_can_fail(kw: dict[str, object], unmet: set[str]) -> None:
    ev = evaluate(**kw)  # type: ignore[arg-type]  # table-driven kwargs
    assert {r.code for r in ev.unmet} == unmet


def test_boundaries_are_inclusive() -> None:
    latest = vitals(T0 + timedelta(minutes=100), sbp=150, dbp=60, hr=84, spo2=92)
    ev = evaluate(latest=latest)  # +20, -20, +20%, 92
    assert ev.all_met, ev.unmet


def test_esketamine_profile_counts_from_dose_start() -> None:
    c = discharge_criteria("esketamine_rems")
    assert c.min_observation_min == 120
    assert c.observation_from == "dose_start"
    assert not evaluate(now_min=119, criteria=c).result("observation_time").met
    assert evaluate(now_min=120, criteria=c).result("observation_time").met


def test_authorize_when_met_by_a_nurse(nurse: Actor) -> None:
    d = authorize_discharge(evaluate(), nurse, at=T0 + timedelta(minutes=100))
    assert not d.overridden
    assert d.decided_by == "nurse-1"


def test_unmet_needs_a_physician_override(nurse: Actor, physician: Actor) -> None:
    ev = evaluate(escort_confirmed=False)
    at = T0 + timedelta(minutes=100)
    with pytest.raises(StateError, match="escort"):
        authorize_discharge(ev, physician, at=at)
    with pytest.raises(AuthError):
        authorize_discharge(ev, nurse, at=at, override_reason="taxi arranged")
    with pytest.raises(InputError):
        authorize_discharge(ev, physician, at=at, override_reason="  ")
    d = authorize_discharge(ev, physician, at=at, override_reason="transport by clinic taxi")
    assert d.overridden
    assert d.overridden_codes == ("escort",)
    with pytest.raises(AuthError):
        authorize_discharge(evaluate(), Actor("desk", Role.FRONT_DESK), at=at)


def test_wrong_scale_for_aldrete() -> None:
    with pytest.raises(InputError):
        evaluate(aldrete=score_phq9([0] * 9))


def test_unknown_profile_and_clinic_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        discharge_criteria("nope")
    bad = tmp_path / "d.toml"
    bad.write_text('[x]\ndescription = "x"\n', encoding="utf-8")
    with pytest.raises(ProtocolError, match="missing required key"):
        discharge_criteria("x", path=bad)
