"""``ketaflow plan`` and ``ketaflow protocols`` through the real CLI entry point."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ketaflow.cli.main import main

BASE = ["plan", "--weight", "70", "--height", "175", "--age", "40", "--sex", "male"]


def _plan(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    rc = main([*BASE, *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def _json(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    rc, out, err = _plan(capsys, *extra, "--format", "json")
    assert rc == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


def test_plan_table(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _plan(capsys, "--protocol", "depression-standard")
    assert rc == 0
    assert err == ""
    for fragment in (
        "Plan: depression-standard v1.0, session 1",
        "ketamine 35 mg (0.5 mg/kg) over 40 min at 52.5 mg/h",
        "Dosing weight 70.0 kg = actual body weight (policy: actual).",
        "rate           52.5 mL/h",
        "VTBI           35 mL",
        "Draw 5 mL of ketamine 10 mg/mL",
        "=> all limits passed",
        "vitals at      0, 10, 20, 30, 40, 55, 70, 85, 100 min",
        "CADSS          at 40 min",
        "BP stop        > 180/110 mmHg",
        "peak Cp        253 ng/mL at 40 min",
        "Warnings: none",
    ):
        assert fragment in out, fragment


def test_plan_json_prediction_matches_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json(capsys, "--protocol", "depression-standard")
    assert doc["pump"]["rate_ml_per_h"] == 52.5
    assert doc["pump"]["vtbi_ml"] == 35.0
    assert doc["order"]["dose_mg"] == pytest.approx(35.0)
    assert doc["dosing_weight"]["policy"] == "actual"
    assert all(c["status"] == "passed" for c in doc["limits"]["checks"])
    pred = doc["prediction"]
    # ketamine-pkpd.md §1.14: Kamp 2020 gives 253 ng/mL at the end of 0.5 mg/kg over 40 min
    # (70 kg); tolerance 1 % for the reference's rounding.
    assert pred["model"] == "Kamp 2020"
    assert pred["peak_cp_ng_per_ml"] == pytest.approx(253.0, rel=0.01)
    assert pred["peak_cp_time_min"] == 40.0
    # The effect site lags plasma (ke0 0.0835/min): its peak is lower and later.
    assert pred["peak_ce_time_min"] > 40.0
    assert pred["peak_ce_ng_per_ml"] < pred["peak_cp_ng_per_ml"]
    assert doc["warnings"] == []


def test_plan_titration_session_and_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = (
        main(
            [
                "plan",
                "--protocol",
                "depression-titration",
                "--weight",
                "110",
                "--height",
                "170",
                "--age",
                "85",
                "--sex",
                "female",
                "--session",
                "3",
                "--format",
                "json",
            ]
        ),
        *capsys.readouterr(),
    )
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["order"]["dose_text"] == "0.6 mg/kg over 40 min"
    assert doc["order"]["dose_mg"] == pytest.approx(66.0)
    warnings = " | ".join(doc["warnings"])
    assert "BMI 38.1 >= 30" in warnings
    assert "session-3 dose assumes" in warnings
    # The PK model's validity warning is caught and shown, not lost.
    assert "age_y 85 is outside the studied range 18 to 80" in warnings


def test_plan_pain_protocol_shows_secondary_evidence(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json(capsys, "--protocol", "pain-crps", "--concentration", "2")
    assert doc["pump"]["rate_ml_per_h"] == pytest.approx(12.3)  # 24.5 mg/h at 2 mg/mL -> 12.25
    assert doc["pump"]["delivered_dose_mg"] == pytest.approx(98.0)
    assert any("secondary source" in w for w in doc["warnings"])


def test_plan_lb_weight_finding_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _plan(capsys, "--protocol", "depression-standard", "--weight", "154")
    assert rc == 0
    assert "[warning] weight 154 kg gives BMI 50.3" in out


def test_hard_limit_prints_the_plan_then_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _plan(capsys, "--protocol", "depression-standard", "--concentration", "100")
    assert rc == 3
    assert "REFUSED" in out
    assert err.count("\n") == 1
    assert "never given IV undiluted" in err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--protocol", "depression-standard", "--sex", "x"], "sex"),
        (["--protocol", "nope"], "unknown protocol 'nope'"),
        (["--protocol", "depression-standard", "--format", "xml"], "--format"),
        (["--protocol", "depression-standard", "--age", "12"], "adults aged 18-110"),
        (["--protocol", "depression-standard", "--session", "0"], "--session"),
        (["--protocol", "depression-standard", "--weight-date", "yesterday"], "YYYY-MM-DD"),
        (["--protocol", "depression-standard", "--weight-date", "2001-01-01"], "re-weigh"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    # Later options override BASE's (click keeps the last value of a repeated option).
    rc, out, err = _plan(capsys, *args)
    assert rc == 2
    assert out == ""
    assert err.startswith("ketaflow: error: ")
    assert err.count("\n") == 1
    assert fragment in err


@pytest.mark.parametrize(
    "args",
    [["--protocol", "depression-standard", "--weight", "abc"], ["--weight", "70"]],
)
def test_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    rc, _, err = _plan(capsys, *args)
    assert rc == 2
    assert err.startswith("ketaflow: error: ")
    assert err.count("\n") == 1


def test_height_in_metres_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _plan(capsys, "--protocol", "depression-standard", "--height", "1.75")
    assert rc == 2
    assert "if it was entered in metres, enter 175 cm" in err


def test_protocols_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["protocols"]) == 0
    out, _ = capsys.readouterr()
    lines = out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [
        "depression-standard",
        "depression-titration",
        "pain-crps",
    ]


def test_plan_reports_predicted_effects(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _plan(capsys, "--protocol", "depression-standard", "--format", "json")
    assert rc == 0
    pred = json.loads(out)["prediction"]
    # Typical patient at the standard dose: about half-maximal dissociation, and the SBP rise
    # the haemodynamic Emax was calibrated to (Vankawala 2021 mean +12.6 mmHg).
    assert 0.3 < pred["peak_dissociation_fraction"] < 0.6
    assert pred["peak_sbp_rise_mmhg"] == pytest.approx(12.6, abs=1.0)
