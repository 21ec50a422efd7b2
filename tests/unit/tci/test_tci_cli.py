"""``ketaflow tci`` and ``ketaflow plan-gentle`` through the real CLI entry point."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from ketaflow.cli.main import main

BASE = [
    "tci",
    "--model",
    "domino-1984",
    "--weight",
    "70",
    "--target",
    "200 ng/mL from 0 min",
    "--target",
    "400 ng/mL from 60 min",
    "--duration",
    "120min",
    "--syringe",
    "10 mg/mL",
    "--max-rate",
    "1200 mL/h",
]
CONTRACT = ["time_s", "target_ng_per_ml", "rate_mg_per_h", "cp_ng_per_ml", "ce_ng_per_ml"]


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("mode", ["plasma", "effect"])
def test_tci_csv_follows_the_column_contract(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([*BASE, "--mode", mode, "--update", "10s", "--format", "csv"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    header = out.out.splitlines()[0].split(",")
    assert header[:5] == CONTRACT
    assert header[5:8] == ["rate_ml_per_h", "volume_ml", "dissociation_fraction"]
    rows = _rows(out.out)
    assert len(rows) == 721  # 720 updates of 10 s plus the final row
    assert float(rows[0]["time_s"]) == 0.0
    assert float(rows[1]["time_s"]) == 10.0
    assert float(rows[-1]["rate_mg_per_h"]) == 0.0
    assert float(rows[360]["target_ng_per_ml"]) == 400.0
    for r in rows:
        ml_h = float(r["rate_ml_per_h"])
        assert ml_h <= 1200.0
        assert float(r["rate_mg_per_h"]) == pytest.approx(10.0 * ml_h, abs=1e-3)
    # Volume is the running sum of rate x 10 s.
    total_ml = sum(float(r["rate_ml_per_h"]) for r in rows[:-1]) * 10 / 3600
    assert float(rows[-1]["volume_ml"]) == pytest.approx(total_ml, abs=1e-3)
    site = "cp_ng_per_ml" if mode == "plasma" else "ce_ng_per_ml"
    assert float(rows[-1][site]) == pytest.approx(400.0, rel=0.005)


def test_tci_json_has_rows_and_summary(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([*BASE, "--mode", "effect", "--format", "json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    doc = json.loads(out.out)
    assert doc["model"]["id"] == "domino-1984"
    assert doc["mode"] == "effect"
    assert len(doc["rows"]) == 721
    assert doc["rows"][0]["control"] == "effect"
    assert doc["summary"]["total_mg"] == pytest.approx(138.1, abs=0.1)
    assert [t["target_ng_per_ml"] for t in doc["summary"]["targets"]] == [200.0, 400.0]
    assert all(t["time_to_95_s"] > 0 for t in doc["summary"]["targets"])


def test_tci_table_and_effect_targets(capsys: pytest.CaptureFixture[str]) -> None:
    args = [a if a != "400 ng/mL from 60 min" else "0.5 dissociation from 60 min" for a in BASE]
    rc = main([*args, "--mode", "effect", "--cp-limit", "1.5x"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "effect targeting" in out.out
    assert "total" in out.out
    # 0.5 dissociation = twice the S-ketamine C50 (racemic): 2 x 121.24 ng/mL.
    assert "target 242.48" in out.out


def test_tci_model_file_and_plasma_only_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "one.toml"
    model.write_text(
        'name = "One compartment"\ndrug = "ketamine"\n[parameters]\n'
        "v1_l = 50.0\nk10_per_min = 0.05\n",
        encoding="utf-8",
    )
    args = ["tci", "--model-file", str(model), "--weight", "70", "--target", "200 ng/mL"]
    args += ["--duration", "10min", "--syringe", "10 mg/mL", "--format", "csv"]
    assert main([*args, "--mode", "plasma"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows[0]["ce_ng_per_ml"] == ""
    assert float(rows[-1]["cp_ng_per_ml"]) == pytest.approx(200.0, rel=1e-3)
    assert main([*args, "--mode", "effect"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "effect site" in err[0]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"--model": "nosuch"}, "unknown model"),
        ({"--target": "200 mg from 0 min"}, "target"),
        ({"--syringe": "10 mg"}, "syringe"),
        ({"--max-rate": "1200 mL"}, "max_rate"),
        ({"--duration": "7205s"}, "whole number"),
        ({"--weight": "70 cm"}, "weight"),
        ({"--mode": "blood"}, "blood"),
        ({"--format": "xml"}, "--format"),
        ({"--update": "0s"}, "update"),
        ({"--target": "200 ng/mL from 3 h"}, "after the end"),
        ({"--plasma-band": "lots"}, "plasma-band"),
        ({"--cp-limit": "0.5"}, "cp_limit_factor"),
    ],
)
def test_tci_bad_input_is_one_line_and_exit_2(
    change: dict[str, str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*BASE, "--mode", "plasma"]
    for key, value in change.items():
        if key in args:
            args[args.index(key) + 1] = value
        else:
            args += [key, value]
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1
    assert err[0].startswith("ketaflow: error:")
    assert fragment in err[0]


@pytest.mark.parametrize("option", ["--weight", "--duration", "--syringe"])
def test_tci_missing_required_option_is_one_line(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*BASE, "--mode", "plasma"]
    i = args.index(option)
    del args[i : i + 2]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"{option} is required" in err[0]


def test_tci_without_mode_or_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(BASE) == 2
    assert "--mode is required" in capsys.readouterr().err
    no_target = [a for a in BASE if "ng/mL from" not in a and a != "--target"]
    assert main([*no_target, "--mode", "plasma"]) == 2
    assert "--target is required" in capsys.readouterr().err


def test_tci_needs_exactly_one_model_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a for a in BASE if a not in ("--model", "domino-1984")]
    assert main([*args, "--mode", "plasma"]) == 2
    assert "exactly one" in capsys.readouterr().err
    both = [*BASE, "--model-file", str(tmp_path / "x.toml"), "--mode", "plasma"]
    assert main(both) == 2
    assert "exactly one" in capsys.readouterr().err


PLAN = ["plan-gentle", "--model", "kamp-2020", "--weight", "70", "--dose", "0.5 mg/kg"]


def test_plan_gentle_table_compares_with_the_constant_rate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = main([*PLAN, "--duration", "40min", "--syringe", "10 mg/mL"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "35 mg within 40 min" in out.out
    assert "plan: peak Ce" in out.out
    assert "constant 52.50 mg/h: peak Ce" in out.out


def test_plan_gentle_csv_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*PLAN, "--duration", "40min", "--format", "csv", "--cap", "200 ng/mL"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        "start_min,end_min,rate_mg_per_h,rate_ml_per_h,constant_rate_mg_per_h"
    )
    rows = _rows(out)
    assert len(rows) == 40
    dose = sum(float(r["rate_mg_per_h"]) for r in rows) / 60.0
    assert dose == pytest.approx(35.0, abs=1e-3)
    assert main([*PLAN, "--duration", "40min", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    s = doc["summary"]
    assert s["plan"]["peak_ce_ng_per_ml"] < s["constant_rate"]["peak_ce_ng_per_ml"]
    assert (
        s["plan"]["peak_dissociation_fraction"] < s["constant_rate"]["peak_dissociation_fraction"]
    )
    assert s["feasible"] is True


def test_plan_gentle_shortest_and_unmet_cap(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [*PLAN, "--duration", "90min", "--cap", "150 ng/mL", "--shortest", "--format", "json"]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    doc = json.loads(out.out)
    assert doc["summary"]["feasible"] is True
    assert 40 < doc["summary"]["duration_min"] < 90
    rc = main([*PLAN, "--duration", "20min", "--cap", "0.1 dissociation"])
    out = capsys.readouterr()
    assert rc == 3
    assert "cap not met" in out.err
    assert "NOT met" in out.out


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--duration", "40min", "--shortest"], "--shortest needs --cap"),
        (["--duration", "40min", "--max-rate", "100 mL/h"], "needs --syringe"),
        (["--duration", "40min", "--max-rate", "10 mg/h"], "cannot be given"),
        (["--duration", "40.5min"], "whole number of segments"),
        (["--duration", "40min", "--cap", "lots"], "cap"),
    ],
)
def test_plan_gentle_bad_input(
    extra: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main([*PLAN, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1
    assert fragment in err[0]


def test_effect_mode_warns_about_plasma_overshoot(capsys: pytest.CaptureFixture[str]) -> None:
    base = [
        "tci",
        "--model",
        "domino-1984",
        "--weight",
        "70",
        "--target",
        "200 ng/mL from 0 min",
        "--update",
        "10s",
        "--duration",
        "30min",
        "--syringe",
        "10 mg/mL",
        "--format",
        "csv",
    ]
    assert main([*base, "--mode", "effect"]) == 0
    err = capsys.readouterr().err
    assert "effect-site targeting drives plasma to" in err
    # With the plasma limit, or in plasma mode, there is nothing to warn about.
    assert main([*base, "--mode", "effect", "--cp-limit", "1.5x"]) == 0
    assert "drives plasma" not in capsys.readouterr().err
    assert main([*base, "--mode", "plasma"]) == 0
    assert "drives plasma" not in capsys.readouterr().err
