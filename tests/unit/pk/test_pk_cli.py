"""``ketaflow simulate`` and ``ketaflow models`` through the real CLI entry point."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from ketaflow.cli.main import main
from ketaflow.pk.effect import DISSOCIATION, SBP_RISE
from ketaflow.pk.library import list_models, load_model
from ketaflow.pk.schedule import Schedule
from ketaflow.pk.solve import simulate

STANDARD = ["--weight", "70", "--dose", "0.5 mg/kg over 40 min"]


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _csv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    assert reader.fieldnames is not None
    return list(reader.fieldnames), rows


def test_csv_has_the_contract_columns_and_one_row_per_output_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, err = _run(
        capsys, "simulate", *STANDARD, "--duration", "120min", "--step", "10s", "--format", "csv"
    )
    assert (rc, err) == (0, "")
    names, rows = _csv(out)
    assert names == [
        "time_s",
        "rate_mg_per_h",
        "cp_ng_per_ml",
        "ce_ng_per_ml",
        "dissociation_fraction",
        "analgesia_fraction",
        "sbp_rise_mmhg",
        "dbp_rise_mmhg",
        "hr_rise_beats_per_min",
    ]
    assert len(rows) == 721
    assert [rows[0]["time_s"], rows[-1]["time_s"]] == ["0", "7200"]
    assert float(rows[239]["rate_mg_per_h"]) == pytest.approx(52.5)  # 0.875 mg/min
    assert float(rows[240]["rate_mg_per_h"]) == 0.0  # the infusion ends at 2400 s
    # The numbers are the engine's, to full precision.
    pred = simulate(
        load_model("kamp-2020").parameters(weight_kg=70.0),
        Schedule.from_text("0.5 mg/kg over 40 min", 70.0),
        np.arange(721) / 6.0,
    )
    assert pred.ce_ng_per_ml is not None
    cp = np.array([float(r["cp_ng_per_ml"]) for r in rows])
    ce = np.array([float(r["ce_ng_per_ml"]) for r in rows])
    np.testing.assert_array_equal(cp, pred.cp_ng_per_ml[0])
    np.testing.assert_array_equal(ce, pred.ce_ng_per_ml[0])
    diss = np.array([float(r["dissociation_fraction"]) for r in rows])
    np.testing.assert_allclose(diss, DISSOCIATION.effect(ce, enantiomer="racemic"), rtol=1e-15)
    sbp = np.array([float(r["sbp_rise_mmhg"]) for r in rows])
    np.testing.assert_allclose(sbp, SBP_RISE.effect(ce, enantiomer="racemic"), rtol=1e-15)


def test_metabolite_column_and_validity_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(
        capsys,
        "simulate",
        "--model",
        "flint-2017",
        "--weight",
        "70",
        "--age",
        "40",
        "--dose",
        "0.25 mg/kg over 40 min",
        "--duration",
        "60min",
        "--step",
        "20min",
        "--format",
        "csv",
    )
    assert rc == 0
    names, rows = _csv(out)
    assert names[:5] == [
        "time_s",
        "rate_mg_per_h",
        "cp_ng_per_ml",
        "ce_ng_per_ml",
        "norketamine_ng_per_ml",
    ]
    assert float(rows[2]["norketamine_ng_per_ml"]) > 0
    lines = err.splitlines()
    assert len(lines) == 3  # model caution, weight, age: one line each
    assert all(line.startswith("ketaflow: warning: Flint 2017") for line in lines)
    assert any("weight_kg 70 is outside the studied range 3.4 to 35" in line for line in lines)
    assert any("age_y 40" in line for line in lines)


def test_no_warning_for_a_typical_adult_on_the_default_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, err = _run(
        capsys, "simulate", *STANDARD, "--age", "45", "--sex", "female", "--height", "1.68 m"
    )
    assert (rc, err) == (0, "")
    assert "Kamp 2020" in out  # the default model names itself in the table title
    assert "cp_ng_per_ml" in out
    assert "dissociation_fraction" in out


def test_json_holds_rows_and_model_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(
        capsys, "simulate", *STANDARD, "--duration", "2h", "--step", "30min", "--format", "json"
    )
    assert rc == 0
    doc = json.loads(out)
    assert doc["model"]["id"] == "kamp-2020"
    assert doc["model"]["doi"] == "10.1097/ALN.0000000000003577"
    assert doc["patient"]["weight_kg"] == 70.0
    assert doc["doses"] == ["0.5 mg/kg over 40 min"]
    assert [r["time_s"] for r in doc["rows"]] == [0, 1800, 3600, 5400, 7200]
    assert doc["columns"][:4] == ["time_s", "rate_mg_per_h", "cp_ng_per_ml", "ce_ng_per_ml"]
    assert doc["pd_models"]["dissociation"]["column"] == "dissociation_fraction"
    assert doc["rows"][1]["cp_ng_per_ml"] == pytest.approx(228.0, abs=0.5)


def test_model_file_and_weight_in_pounds(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    src = Path(__file__).parents[3] / "src/ketaflow/pk/models/kamp-2020.toml"
    path = tmp_path / "my-kamp.toml"
    path.write_text(src.read_text(encoding="utf-8").replace("default = true\n", ""), "utf-8")
    rc1, out1, _ = _run(capsys, "simulate", "--model-file", str(path), *STANDARD, "--format", "csv")
    rc2, out2, _ = _run(
        capsys,
        "simulate",
        "--weight",
        "154.32358352941 lb",
        "--dose",
        "35 mg over 40 min",
        "--format",
        "csv",
    )
    assert rc1 == rc2 == 0
    a, b = _csv(out1)[1], _csv(out2)[1]
    assert float(a[40]["cp_ng_per_ml"]) == pytest.approx(float(b[40]["cp_ng_per_ml"]), rel=1e-9)


def test_boluses_and_several_doses(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(
        capsys,
        "simulate",
        "--weight",
        "80",
        "--dose",
        "bolus 0.1 mg/kg at 5 min",
        "--dose",
        "20 mg/h from 10 min to 70 min",
        "--duration",
        "90min",
        "--step",
        "5min",
        "--format",
        "csv",
    )
    assert rc == 0
    rows = _csv(out)[1]
    by_time = {int(r["time_s"]): r for r in rows}
    assert float(by_time[0]["cp_ng_per_ml"]) == 0.0
    assert float(by_time[300]["cp_ng_per_ml"]) > 200  # 8 mg into 25 L: the bolus is at 5 min
    assert float(by_time[600]["rate_mg_per_h"]) == 20.0
    assert float(by_time[4200]["rate_mg_per_h"]) == 0.0


BAD_INPUT = [
    (["--model", "marsh-1991", *STANDARD], "unknown model 'marsh-1991'"),
    (["--model", "kamp-2020", "--model-file", "x.toml", *STANDARD], "either --model or"),
    (["--model-file", "/nonexistent/model.toml", *STANDARD], "cannot read model file"),
    (["--weight", "70", "--dose", "half a vial"], "dose 'half a vial'"),
    (["--weight", "70", "--dose", "0.5 mg/kq over 40 min"], "unknown unit 'mg/kq'"),
    (["--weight", "70", "--dose", "0.5 mL/h for 40 min"], "dose"),
    (["--weight", "-70", "--dose", "35 mg over 40 min"], "--weight must be a positive"),
    (["--weight", "0", "--dose", "35 mg over 40 min"], "--weight must be a positive"),
    (["--weight", "70 mg", "--dose", "35 mg over 40 min"], "body mass"),
    (["--weight", "seventy", "--dose", "35 mg over 40 min"], "--weight"),
    ([*STANDARD, "--step", "7min"], "does not divide"),
    ([*STANDARD, "--step", "0s"], "--step must be positive"),
    ([*STANDARD, "--step", "10"], "has no unit"),
    ([*STANDARD, "--duration", "0min"], "--duration must be positive"),
    ([*STANDARD, "--duration", "30d", "--step", "1s"], "limit 100,000"),
    ([*STANDARD, "--format", "xml"], "--format must be one of table, csv, json"),
    ([*STANDARD, "--sex", "other"], "--sex must be 'male' or 'female'"),
    ([*STANDARD, "--age", "-3"], "--age must be between 0 and 130"),
    ([*STANDARD, "--height", "-170"], "--height must be a positive"),
    (["--dose", "35 mg over 40 min"], "--weight is required"),
    (["--weight", "70"], "give at least one --dose"),
]


@pytest.mark.parametrize(("args", "fragment"), BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    rc, out, err = _run(capsys, "simulate", *args)
    assert rc == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ketaflow: error: ")
    assert fragment in lines[0]


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, "simulate", "--wieght", "70")
    assert rc == 2
    assert len(err.splitlines()) == 1


def test_models_lists_every_model_with_its_source(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, "models")
    assert (rc, err) == (0, "")
    for m in list_models():
        assert m.id in out
    assert "kamp-2020 *" in out
    assert "Hijazi 2003" in out
    assert "10.1097/ALN" in out  # DOIs are shown (long ones fold over lines)


def test_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "models", "--format", "json")
    assert rc == 0
    doc = json.loads(out)
    assert doc[0]["id"] == "kamp-2020"
    assert [d["default"] for d in doc].count(True) == 1
    by_id = {d["id"]: d for d in doc}
    assert by_id["hijazi-2003"]["validity"]["caution"].endswith("not for outpatients.")
    assert by_id["flint-2017"]["drug"] == "esketamine"
    assert by_id["domino-1984"]["verification"].startswith("micro-constants [V2]")


def test_models_bad_format(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, "models", "--format", "yaml")
    assert (rc, out) == (2, "")
    assert err.startswith("ketaflow: error: --format must be one of")
