"""Virtual session: determinism, plausibility, cadence, reaction to rate changes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from ketaflow.errors import InputError
from ketaflow.pk.population import PopulationSpec
from ketaflow.sim.virtual_patient import (
    UCUM_UNITS,
    CheckIn,
    RateStep,
    Reading,
    SessionConfig,
    SessionEvent,
    VirtualSession,
)

SPEC = PopulationSpec.create(seed=2025)
STANDARD = ("0.5 mg/kg over 40 min",)


def _session(index: int = 3) -> VirtualSession:
    return VirtualSession.create(
        SPEC, index, doses=STANDARD, config=SessionConfig(duration_min=120.0)
    )


def _readings(events: list[SessionEvent], kind: str) -> list[Reading]:
    return [e for e in events if isinstance(e, Reading) and e.kind == kind]


def test_same_seed_and_patient_give_identical_streams() -> None:
    a = list(_session().stream())
    b = list(_session().stream())
    assert a == b
    assert len(a) > 10_000


def test_other_patient_or_seed_gives_another_stream() -> None:
    base = _readings(list(_session(3).stream()), "hr")
    other = _readings(list(_session(4).stream()), "hr")
    other_seed = VirtualSession.create(
        PopulationSpec.create(seed=1), 3, doses=STANDARD, config=SessionConfig(duration_min=120.0)
    )
    third = _readings(list(other_seed.stream()), "hr")
    assert [r.value for r in base] != [r.value for r in other]
    assert [r.value for r in base] != [r.value for r in third]


def test_cadence_units_and_plausible_ranges() -> None:
    events = list(_session().stream())
    times = [e.time_s for e in events]
    assert times == sorted(times)
    for e in events:
        if isinstance(e, Reading):
            assert e.unit == UCUM_UNITS[e.kind]
    sbp = _readings(events, "sbp")
    # Cuff: 0, every 10 min while infusing (to 40 min), then every 15 min.
    assert [r.time_s / 60 for r in sbp] == [0, 10, 20, 30, 40, 55, 70, 85, 100, 115]
    counts = Counter(e.kind for e in events if isinstance(e, Reading))
    # HR and SpO2 each second unless a dropout (at most a few minutes in 2 h), RR every 5 s.
    assert 7000 <= counts["hr"] <= 7201
    assert counts["hr"] == counts["spo2"]
    assert 1400 <= counts["rr"] <= 1441
    hr = np.array([r.value for r in _readings(events, "hr") if not r.artefact])
    spo2 = np.array([r.value for r in _readings(events, "spo2") if not r.artefact])
    assert 35 <= hr.min() <= hr.max() <= 160
    assert 85 <= spo2.min() <= spo2.max() <= 100
    assert np.all(hr == np.rint(hr))
    for s, d, m in zip(sbp, _readings(events, "dbp"), _readings(events, "map"), strict=True):
        assert 40 <= d.value < s.value <= 250
        assert d.value < m.value < s.value
    check_ins = [e for e in events if isinstance(e, CheckIn)]
    assert [c.time_s / 60 for c in check_ins] == [10 * k for k in range(1, 13)]
    for c in check_ins:
        assert all(0 <= v <= 10 for v in (c.comfort, c.intensity, c.anxiety, c.nausea))


def test_drug_raises_blood_pressure_and_heart_rate_on_average() -> None:
    # Expected (noise-free) vitals: the drug effect peaks around the end of the infusion.
    s = _session()
    before, peak, late = (s.expected_vitals(t * 60.0) for t in (0, 45, 119))
    assert before["dissociation"] == 0.0
    assert peak["sbp"] > before["sbp"] + 1.0
    assert peak["hr"] > before["hr"]
    assert peak["dissociation"] > 0.1
    assert late["sbp"] < peak["sbp"]


def test_set_rate_changes_only_what_comes_after() -> None:
    plain = list(_session().stream())
    s = _session()
    changed: list[SessionEvent] = []
    for e in s.stream():
        changed.append(e)
        if e.time_s == 600.0 and isinstance(e, CheckIn):
            s.set_rate(0.0, at_time_min=10.0)  # staff stop the pump at 10 min
    # Identical up to the change, lower concentrations after it.
    n_before = next(i for i, e in enumerate(plain) if e.time_s > 600.0)
    assert changed[:n_before] == plain[:n_before]
    assert s.rate_history[-1] == RateStep(10.0, 0.0)
    ce_plain = _session().predicted_ce_ng_per_ml(np.array([2400.0]))[0]
    ce_stopped = s.predicted_ce_ng_per_ml(np.array([2400.0]))[0]
    assert ce_stopped < 0.5 * ce_plain
    # The noise is the same: at 20 min the SBP differs only by the drug effect.
    sbp_p = next(r.value for r in _readings(plain, "sbp") if r.time_s == 1200.0)
    sbp_c = next(r.value for r in _readings(changed, "sbp") if r.time_s == 1200.0)
    assert sbp_c <= sbp_p


def test_prediction_uses_the_exact_engine_on_the_actual_history() -> None:
    from ketaflow.pk.schedule import Infusion, Schedule
    from ketaflow.pk.solve import simulate

    s = _session()
    s.set_rate(20.0, at_time_min=15.0)
    w = s.weight_kg
    first = 0.5 * w / 40.0  # mg/min of the order
    vtbi = 0.5 * w
    given_by_15 = first * 15.0
    end = 15.0 + (vtbi - given_by_15) / (20.0 / 60.0)  # pump stops when the dose is in
    expected = Schedule.from_events([Infusion(0.0, 15.0, first), Infusion(15.0, end, 20.0 / 60.0)])
    assert s.effective_rate_history()[-1].time_min == pytest.approx(end, rel=1e-12)
    params = s.cohort.population.pk_parameters(weight_kg=[w])
    t = np.array([10.0, 30.0, 60.0, 110.0])
    ref = simulate(params, expected, t).ce_ng_per_ml
    assert ref is not None
    np.testing.assert_allclose(s.predicted_ce_ng_per_ml(t * 60.0), ref[0], rtol=1e-9)


def test_stream_can_start_late_with_the_same_values() -> None:
    full = list(_session().stream())
    late = list(_session().stream(start_s=1800.0))
    assert late == [e for e in full if e.time_s >= 1800.0]


def test_replace_rate_history_and_weight_override() -> None:
    s = VirtualSession.create(SPEC, 0, weight_kg=90.0, config=SessionConfig(duration_min=60.0))
    assert s.weight_kg == 90.0
    assert s.expected_vitals(1800.0)["dissociation"] == 0.0
    s.replace_rate_history([RateStep(5.0, 60.0), RateStep(25.0, 0.0)], vtbi_mg=None)
    assert s.infusing_at(10.0)
    assert not s.infusing_at(30.0)
    assert s.expected_vitals(1800.0)["dissociation"] > 0.0


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.set_rate(-1.0, 5.0), "rate_mg_per_h"),
        (lambda s: s.set_rate(10.0, 500.0), "at_time_min"),
        (lambda s: s.replace_rate_history([RateStep(-1.0, 5.0)], vtbi_mg=None), "rate_history"),
    ],
)
def test_bad_rate_changes_are_refused(call: Callable[[VirtualSession], None], field: str) -> None:
    s = _session()
    with pytest.raises(InputError) as info:
        call(s)
    assert info.value.field == field


def test_bad_config_is_refused() -> None:
    with pytest.raises(InputError, match="duration_min"):
        SessionConfig(duration_min=0.0)
    with pytest.raises(InputError, match="weight_kg"):
        VirtualSession.create(SPEC, 0, weight_kg=0.5)
