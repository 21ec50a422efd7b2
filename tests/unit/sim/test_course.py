"""Courses of sessions: between-session titration by the dosing package on simulated outcomes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ketaflow.cli.main import main
from ketaflow.dosing.protocols import load_protocol
from ketaflow.dosing.titration import SessionOutcome
from ketaflow.errors import InputError
from ketaflow.sim.arms import protocol_arm, resolve_arms
from ketaflow.sim.course import (
    CadssMapping,
    CourseSettings,
    ResponseAssumption,
    next_doses,
    stop_alarm_codes,
    titration_inputs,
)
from ketaflow.sim.engine import SessionSettings, TimeGrid, trial_alarm_rules
from ketaflow.sim.trial import TrialResult, make_spec, run_trial

SETTINGS = SessionSettings(grid=TimeGrid(horizon_min=240.0, dt_min=0.5))
ARMS = ["depression-standard", "depression-titration"]


def _run(
    tmp_path: Path, *, n: int = 300, chunk: int = 300, course: CourseSettings | None = None
) -> TrialResult:
    spec = make_spec(
        resolve_arms(ARMS),
        n=n,
        seed=11,
        chunk_size=chunk,
        settings=SETTINGS,
        course=course or CourseSettings(),
    )
    return run_trial(spec, out_dir=tmp_path, report=False)


def _rows(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _by_patient(rows: dict[str, np.ndarray], arm: str, key: str) -> np.ndarray:
    """(patients, sessions) array of one column of one arm."""
    sel = rows["arm"] == arm
    order = np.lexsort((rows["session_number"][sel], rows["patient_index"][sel]))
    n_sessions = int(rows["session_number"][sel].max())
    return np.asarray(rows[key][sel][order]).reshape(-1, n_sessions)


@pytest.fixture(scope="module")
def six(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A default trial (each protocol's 6-session course, response none), 300 patients."""
    res = _run(tmp_path_factory.mktemp("six"))
    return res.summary, _rows(res.files["patients"])


def test_fixed_dose_protocol_stays_at_its_dose_every_session(
    six: tuple[dict[str, Any], dict[str, np.ndarray]],
) -> None:
    summary, rows = six
    dose = _by_patient(rows, "depression-standard", "dose_mg_per_kg")
    assert dose.shape == (300, 6)
    assert np.all(dose == 0.5)
    std = summary["course"]["arms"]["depression-standard"]
    assert [s["dose_levels"] for s in std["per_session"]] == [
        [{"mg_per_kg": 0.5, "count": 300, "share": 1.0}]
    ] * 6
    assert std["per_course"]["outcomes"]["reached_ceiling"]["n"] == 0  # no ceiling: n/a


def test_titration_raises_by_one_step_per_tolerated_session_up_to_the_ceiling(
    six: tuple[dict[str, Any], dict[str, np.ndarray]],
) -> None:
    summary, rows = six
    protocol = load_protocol("depression-titration")
    planned = [protocol.planned_dose_mg_per_kg(k) for k in range(1, 7)]
    # The protocol raises after at least two sessions (session_at_least = 2), by 0.1 mg/kg, to
    # the 0.75 ceiling: 0.5, 0.5, 0.6, 0.7, 0.75, 0.75.
    assert planned == pytest.approx([0.5, 0.5, 0.6, 0.7, 0.75, 0.75], abs=1e-9)
    dose = _by_patient(rows, "depression-titration", "dose_mg_per_kg")
    tolerated = _by_patient(rows, "depression-titration", "tolerated").astype(bool)
    nxt = _by_patient(rows, "depression-titration", "next_dose_mg_per_kg")
    # Every session's dose is the previous session's decision.
    np.testing.assert_array_equal(dose[:, 1:], nxt[:, :-1])
    # Patients who tolerated sessions 1-5 (and had no hold: CADSS and BP below the hold
    # thresholds) follow the plan exactly; that is almost everyone under response 'none'.
    rule = _by_patient(rows, "depression-titration", "titration_rule")
    clean = tolerated[:, :5].all(axis=1) & np.isin(
        rule[:, :5], ["none", "raise-if-inadequate"]
    ).all(axis=1)
    assert clean.mean() > 0.85
    np.testing.assert_allclose(dose[clean], np.tile(planned, (int(clean.sum()), 1)), atol=1e-12)
    # Paired with the fixed-dose arm on the same patients: equal in sessions 1-2, higher after.
    paired = summary["course"]["paired"][0]
    diffs = [s["outcomes"]["dose_mg_per_kg"]["mean_difference"] for s in paired["per_session"]]
    assert diffs[0] == 0.0
    assert abs(diffs[1]) < 0.01
    assert diffs[2] > 0.08
    assert diffs[3] > 0.16
    assert diffs[4] > 0.2
    peak = [s["outcomes"]["peak_dissociation"]["mean_difference"] for s in paired["per_session"]]
    assert peak[0] == 0.0
    assert peak[4] > 0.05
    tit = summary["course"]["arms"]["depression-titration"]["per_course"]["outcomes"]
    assert tit["reached_ceiling"]["proportion"] > 0.85
    assert paired["per_course"]["cumulative_dose_mg"]["ci95"][0] > 0


def test_a_crossed_stop_threshold_lowers_the_next_dose_in_the_simulation(
    six: tuple[dict[str, Any], dict[str, np.ndarray]],
) -> None:
    _, rows = six
    dose = _by_patient(rows, "depression-titration", "dose_mg_per_kg")
    crossed = _by_patient(rows, "depression-titration", "stop_threshold_crossed").astype(bool)
    tolerated = _by_patient(rows, "depression-titration", "tolerated").astype(bool)
    rule = _by_patient(rows, "depression-titration", "titration_rule")
    hits = np.argwhere(crossed[:, :5])
    assert hits.size > 0, "no simulated stop-threshold crossing in this cohort"
    for i, k in hits:
        assert not tolerated[i, k]
        assert rule[i, k] == "lower-after-stop-threshold"
        assert dose[i, k + 1] == pytest.approx(max(dose[i, k] - 0.1, 0.1), abs=1e-9)


def test_vectorised_course_step_equals_per_patient_calls_of_the_dosing_code() -> None:
    protocol = load_protocol("depression-titration")
    arm = protocol_arm(protocol)
    rules = trial_alarm_rules()
    codes = stop_alarm_codes(rules)
    assert set(codes) == {"SBP_HIGH_STOP", "DBP_HIGH_STOP", "SBP_SEVERE", "DBP_SEVERE"}
    rng = np.random.default_rng(3)
    n = 400
    outcomes: dict[str, np.ndarray] = {
        "stopped_early": rng.random(n) < 0.2,
        "peak_dissociation": rng.random(n),
        "max_sbp_mm_hg": rng.choice([150.0, 180.0, 181.0, 205.0], n),
        "max_dbp_mm_hg": rng.choice([90.0, 110.0, 111.0, 125.0], n),
    }
    for rule in rules:
        outcomes[f"alarm_{rule.spec.code}"] = rng.random(n) < 0.1
    cadss = CadssMapping(40.0)  # wide enough that the > 17 hold rule fires for some
    current = rng.choice([0.1, 0.4, 0.5, 0.6, 0.7, 0.75], n)
    response = rng.choice([0.0, 49.9, 50.0, 80.0], n)
    inputs = titration_inputs(outcomes, codes, cadss)
    for session in (1, 2, 5):
        batch = next_doses(arm, current, session, inputs, response)
        actions = set()
        for i in range(n):
            one = protocol.decide_next_dose(
                SessionOutcome(
                    session_number=session,
                    tolerated=bool(inputs.tolerated[i]),
                    response_pct=float(response[i]),
                    max_dissociation=float(inputs.cadss[i]),
                    max_sbp_mmhg=float(outcomes["max_sbp_mm_hg"][i]),
                    max_dbp_mmhg=float(outcomes["max_dbp_mm_hg"][i]),
                    stop_threshold_crossed=bool(inputs.stop_threshold_crossed[i]),
                ),
                float(current[i]),
            )
            assert batch.next_mg_per_kg[i] == pytest.approx(one.next_mg_per_kg, abs=1e-12)
            actions.add(one.action.value)
            if inputs.stop_threshold_crossed[i]:
                assert one.next_mg_per_kg == pytest.approx(max(current[i] - 0.1, 0.1), abs=1e-9)
        assert "lower" in actions
        if session >= 2:
            assert {"raise", "hold"} <= actions


def test_tolerated_and_stop_threshold_come_from_the_session_outcome() -> None:
    codes = ("SBP_HIGH_STOP",)
    outcomes = {
        "stopped_early": np.array([False, True, False, False]),
        "alarm_SBP_HIGH_STOP": np.array([False, False, True, False]),
        "peak_dissociation": np.array([0.0, 0.5, 1.0, 0.25]),
        "max_sbp_mm_hg": np.array([120.0, 130.0, 190.0, np.nan]),
        "max_dbp_mm_hg": np.array([80.0, 85.0, 100.0, np.nan]),
    }
    got = titration_inputs(outcomes, codes, CadssMapping(92.0))
    np.testing.assert_array_equal(got.tolerated, [True, False, False, True])
    np.testing.assert_array_equal(got.stop_threshold_crossed, [False, False, True, False])
    np.testing.assert_allclose(got.cadss, [0.0, 46.0, 92.0, 23.0])


def test_adequate_response_assumption_holds_the_titration_at_the_start(tmp_path: Path) -> None:
    res = _run(
        tmp_path,
        n=150,
        course=CourseSettings(sessions=3, response=ResponseAssumption.parse("fixed:60")),
    )
    rows = _rows(res.files["patients"])
    assert len(rows["arm"]) == 150 * 2 * 3
    dose = _by_patient(rows, "depression-titration", "dose_mg_per_kg")
    assert dose.shape == (150, 3)
    not_tolerated = _by_patient(rows, "depression-titration", "tolerated") == 0
    # Responders are held at 0.5 mg/kg unless a session was not tolerated (then lowered).
    assert np.all(dose[~not_tolerated[:, :2].any(axis=1)] == 0.5)
    assert np.all(rows["response_pct"] == 60.0)
    assert res.summary["course"]["response_assumption"]["label"] == "fixed:60"
    assert res.summary["meta"]["assumptions"][0].startswith("ASSUMPTION (response)")


def test_session_one_of_a_course_equals_a_one_session_trial(tmp_path: Path) -> None:
    one = _run(tmp_path / "one", n=200, course=CourseSettings(sessions=1))
    three = _run(tmp_path / "three", n=200, course=CourseSettings(sessions=3))
    assert one.summary["arms"] == three.summary["arms"]
    assert one.summary["paired"] == three.summary["paired"]
    s1 = three.summary["course"]["arms"]["depression-titration"]["per_session"][0]
    assert s1 == one.summary["course"]["arms"]["depression-titration"]["per_session"][0]


def test_course_rows_do_not_depend_on_the_chunk_size(tmp_path: Path) -> None:
    course = CourseSettings(sessions=3)
    a = _rows(_run(tmp_path / "a", n=150, chunk=150, course=course).files["patients"])
    b = _rows(_run(tmp_path / "b", n=150, chunk=64, course=course).files["patients"])
    oa = np.lexsort((a["session_number"], a["patient_index"], a["arm"]))
    ob = np.lexsort((b["session_number"], b["patient_index"], b["arm"]))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key][oa], b[key][ob], err_msg=key)


@pytest.mark.slow
def test_local_processes_equal_the_sequential_run_for_a_course(tmp_path: Path) -> None:
    course = CourseSettings(sessions=3)
    spec = make_spec(
        resolve_arms(ARMS), n=900, seed=4, chunk_size=300, settings=SETTINGS, course=course
    )
    one = run_trial(spec, workers=1, out_dir=tmp_path / "one", report=False)
    two = run_trial(spec, workers=2, out_dir=tmp_path / "two", report=False)
    assert one.summary == two.summary
    a, b = _rows(one.files["patients"]), _rows(two.files["patients"])
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("none", True),
        ("fixed:60", True),
        ("FIXED:0", True),
        ("fixed:101", False),
        ("fixed:x", False),
        ("linear", False),
        ("fixed:nan", False),
    ],
)
def test_response_assumption_parsing(text: str, ok: bool) -> None:
    if ok:
        r = ResponseAssumption.parse(text)
        assert r.label == text.lower()
        assert r.response_pct(1, 3).shape == (3,)
    else:
        with pytest.raises(InputError, match="response"):
            ResponseAssumption.parse(text)


@pytest.mark.parametrize("points", [0.0, -1.0, 93.0, math.inf])
def test_cadss_mapping_rejects_points_outside_the_scale(points: float) -> None:
    with pytest.raises(InputError, match="cadss"):
        CadssMapping(points)


def test_sessions_bounds() -> None:
    with pytest.raises(InputError, match="sessions"):
        CourseSettings(sessions=0)
    with pytest.raises(InputError, match="sessions"):
        CourseSettings(sessions=101)


def test_cli_runs_a_course_and_prints_per_session_and_course_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["trial", "-p", ARMS[0], "-p", ARMS[1], "--n", "60", "--seed", "3", "--out", str(out)]
    args += ["--workers", "1", "--horizon", "240", "--sessions", "4", "--quiet"]
    args += ["--cadss-per-fraction", "92", "--response", "none"]
    rc = main(args)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    lines = captured.out.splitlines()
    assert "# response assumption: none" in lines
    assert any(line.startswith("depression-titration\t4\tdose_mg_per_kg\t") for line in lines)
    assert any(line.startswith("depression-titration\tcourse\treached_ceiling\t") for line in lines)
    assert any(
        line.startswith("depression-titration - depression-standard\t3\tdose_mg_per_kg")
        for line in lines
    )
    assert "ASSUMED response none, CADSS 92 x" in captured.err
    html = (out / "report.html").read_text()
    assert "Course of sessions" in html
    assert "ASSUMPTION (response)" in html
    assert "ASSUMPTION (dissociation scale)" in html
    assert "Peak predicted dissociation by session" in html


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--sessions", "0"], "sessions must lie"),
        (["--response", "maybe"], "--response"),
        (["--cadss-per-fraction", "200"], "cadss"),
    ],
)
def test_cli_bad_course_options_are_one_line_and_exit_2(
    extra: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["trial", "-p", "depression-standard", "--out", str(tmp_path / "x"), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1


def test_a_titrating_arm_needs_a_per_kg_order_and_dose() -> None:
    from ketaflow.errors import ProtocolError
    from ketaflow.sim.arms import TrialArm

    protocol = load_protocol("depression-titration")
    with pytest.raises(ProtocolError, match="dose_mg_per_kg"):
        TrialArm("t", ("0.5 mg/kg over 40 min",), titration=protocol.titration)
    with pytest.raises(ProtocolError, match="per-kg"):
        TrialArm("t", ("35 mg over 40 min",), titration=protocol.titration, dose_mg_per_kg=0.5)
    with pytest.raises(ProtocolError, match="course_sessions"):
        TrialArm("t", ("0.5 mg/kg over 40 min",), course_sessions=0)
