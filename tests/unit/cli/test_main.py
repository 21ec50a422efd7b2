from __future__ import annotations

import pytest

from ketaflow.cli.main import EXIT_CODES, main


def test_no_arguments_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "Usage" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [["nosuch"], ["demo", "--weight", "abc"], ["demo", "--bogus-option"]],
)
def test_usage_mistakes_are_one_line_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == EXIT_CODES["bad_input"]
    err = capsys.readouterr().err
    assert err.startswith("ketaflow: error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_demo_prints_standard_infusion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--table-only", "--weight", "70"]) == 0
    out = capsys.readouterr().out
    assert "35.0 mg" in out
    assert "52.5" in out  # 0.75 mg/kg/h x 70 kg
