"""Trial runs: reproducibility across chunking and workers, outputs, report, CLI."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ketaflow.cli.main import main
from ketaflow.sim.arms import resolve_arms
from ketaflow.sim.course import CourseSettings
from ketaflow.sim.engine import SessionSettings, TimeGrid
from ketaflow.sim.trial import TrialSpec, make_spec, run_trial

SETTINGS = SessionSettings(grid=TimeGrid(horizon_min=240.0, dt_min=0.5))
#: These tests are about one session; courses are tested in test_course.py.
ONE_SESSION = CourseSettings(sessions=1)


@pytest.fixture
def slow(protocol_file: Callable[[str, str], Path]) -> str:
    return str(protocol_file("depression-slow", "0.5 mg/kg over 100 min"))


def _spec(n: int, chunk: int, slow: str, seed: int = 5) -> TrialSpec:
    return make_spec(
        resolve_arms(["depression-standard", slow]),
        n=n,
        seed=seed,
        chunk_size=chunk,
        settings=SETTINGS,
        course=ONE_SESSION,
    )


def _rows(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _close(a: Any, b: Any, rel: float) -> None:
    # Recursive comparison of two summaries: numbers to ``rel`` (0: exactly), all else equal.
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k], rel)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _close(x, y, rel)
    elif isinstance(a, float) and isinstance(b, float) and rel > 0:
        assert a == pytest.approx(b, rel=rel, abs=1e-12)
    else:
        assert a == b


def test_same_seed_same_results_whatever_the_chunk_size(tmp_path: Path, slow: str) -> None:
    a = run_trial(_spec(1200, 1200, slow), out_dir=tmp_path / "a")
    b = run_trial(_spec(1200, 500, slow), out_dir=tmp_path / "b")
    again = run_trial(_spec(1200, 1200, slow), out_dir=tmp_path / "c")
    # Same chunk size: bitwise identical. Other chunk size: float sums differ in the last bits
    # only (per-patient outcomes are identical, see below).
    _close(a.summary, again.summary, 0.0)
    assert b.summary["meta"].pop("chunk_size") == 500
    a.summary["meta"].pop("chunk_size")
    _close(a.summary, b.summary, 1e-12)
    ra, rb = _rows(a.files["patients"]), _rows(b.files["patients"])
    order_a = np.lexsort((ra["patient_index"], ra["arm"]))
    order_b = np.lexsort((rb["patient_index"], rb["arm"]))
    for key in ra:
        np.testing.assert_array_equal(ra[key][order_a], rb[key][order_b], err_msg=key)


def test_outputs_summary_patients_and_self_contained_report(tmp_path: Path, slow: str) -> None:
    res = run_trial(_spec(600, 300, slow), out_dir=tmp_path)
    assert set(res.files) == {"patients", "summary", "report"}
    summary = json.loads(res.files["summary"].read_text())
    assert summary["meta"]["n_patients"] == 600
    assert summary["meta"]["seed"] == 5
    arms = summary["arms"]
    assert list(arms) == ["depression-standard", "depression-slow"]
    std = arms["depression-standard"]["outcomes"]
    lo, hi = std["peak_cp_ng_per_ml"]["mean_ci95"]
    assert lo < std["peak_cp_ng_per_ml"]["mean"] < hi
    alarm = std["alarm_SBP_HIGH_CONSIDER_STOP"]
    assert 0.0 <= alarm["ci95"][0] <= alarm["proportion"] <= alarm["ci95"][1]
    vpc = arms["depression-slow"]["vpc"]
    assert len(vpc["times_min"]) == SETTINGS.grid.n_times
    p5, p50, p95 = (np.array(vpc["cp"][k], dtype=float) for k in ("p5", "p50", "p95"))
    assert np.all(p5 <= p50 + 1e-12)
    assert np.all(p50 <= p95 + 1e-12)
    # The slower infusion peaks lower and later (paired, same patients).
    pair = summary["paired"][0]
    assert (pair["a"], pair["b"]) == ("depression-standard", "depression-slow")
    d = pair["outcomes"]["peak_cp_ng_per_ml"]
    assert d["ci95"][1] < 0
    rows = _rows(res.files["patients"])
    assert len(rows["arm"]) == 1200
    assert set(rows["arm"]) == {"depression-standard", "depression-slow"}
    html = res.files["report"].read_text()
    assert html.count("<svg") >= 9
    assert "<script" not in html
    assert not re.search(r"(src|href)=\"https?://", html)
    assert "Paired differences" in html
    assert "suggest_in_session" in html
    assert "SBP_HIGH_STOP" in html


def test_csv_fallback_has_the_same_rows(tmp_path: Path, slow: str) -> None:
    res = run_trial(_spec(200, 200, slow), out_dir=tmp_path, patient_format="csv", report=False)
    with res.files["patients"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 400
    assert rows[0]["arm"] == "depression-standard"
    assert rows[0]["female"] in ("true", "false")
    float(rows[0]["peak_cp_ng_per_ml"])


@pytest.mark.slow
def test_two_local_worker_processes_give_the_single_process_result(
    tmp_path: Path, slow: str
) -> None:
    one = run_trial(_spec(3000, 1000, slow), workers=1, out_dir=tmp_path / "one")
    two = run_trial(_spec(3000, 1000, slow), workers=2, out_dir=tmp_path / "two")
    _close(one.summary, two.summary, 0.0)


def test_cli_trial_runs_and_prints_results(
    tmp_path: Path, slow: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    rc = main(
        [
            "trial",
            "--protocol",
            "depression-standard",
            "-p",
            slow,
            "--n",
            "300",
            "--seed",
            "9",
            "--out",
            str(out),
            "--workers",
            "1",
            "--horizon",
            "240",
            "--sessions",
            "1",
            "--quiet",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    lines = captured.out.strip().splitlines()
    assert lines[0] == "protocol\toutcome\tvalue\tci95_low\tci95_high"
    assert any(line.startswith("depression-slow - depression-standard\tpeak_cp") for line in lines)
    assert "seed 9" in captured.err
    assert "ASSUMED response none" in captured.err
    assert (out / "summary.json").exists()
    assert (out / "report.html").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["trial", "-p", "nope", "--out", "x"], "unknown protocol"),
        (["trial", "-p", "depression-standard", "--out", "x", "--n", "0"], "n must lie"),
        (["trial", "-p", "depression-standard", "--out", "x", "--format", "xls"], "--format"),
        (["trial", "-p", "depression-standard", "--out", "x", "--dt", "0.3"], "multiple"),
        (["monitor", "--session", "1"], "--token"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = [str(tmp_path / a) if a == "x" else a for a in args]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
