"""``ketaflow demo`` refuses bad input before it starts anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketaflow.cli.main import EXIT_CODES, main


def test_a_non_empty_data_dir_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ketaflow.sqlite3").write_text("old data", encoding="utf-8")
    assert main(["demo", "--data-dir", str(tmp_path)]) == EXIT_CODES["bad_input"]
    err = capsys.readouterr().err
    assert "not empty" in err
    assert err.count("\n") == 1
    assert (tmp_path / "ketaflow.sqlite3").read_text(encoding="utf-8") == "old data"


@pytest.mark.parametrize("port", ["0", "70000"])
def test_a_bad_port_is_refused(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--port", port]) == EXIT_CODES["bad_input"]
    assert "--port" in capsys.readouterr().err
