"""Fixtures of the simulation tests."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest

ProtocolFactory = Callable[[str, str], Path]


@pytest.fixture
def protocol_file(tmp_path: Path) -> ProtocolFactory:
    """Write a clinic protocol file: the shipped depression-standard with another name and dose.

    A real protocol file, validated by the dosing package when loaded (drug-library limits,
    rule thresholds), as a clinic would ship its own.
    """

    def make(name: str, dose_text: str) -> Path:
        base = (
            resources.files("ketaflow.dosing") / "protocols" / "depression-standard.toml"
        ).read_text(encoding="utf-8")
        text = re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', base, count=1)
        text = re.sub(r'(?m)^text = ".*"$', f'text = "{dose_text}"', text, count=1)
        path = tmp_path / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return make
