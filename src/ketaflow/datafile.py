"""Reading the TOML data files (models, protocols, drug library): one place for file errors.

Data files are validated strictly: a key nobody reads is almost always a typo that would
otherwise silently leave a default in force, so unknown keys are errors that name the key and
list the allowed ones.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ketaflow.errors import InputError


def read_toml(path: str | Path, *, what: str, error: type[InputError]) -> dict[str, Any]:
    """Decode the TOML file at ``path``; unreadable or malformed files raise ``error``.

    ``what`` names the kind of file in the message ("model file", "protocol file", ...).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {str(p)!r}: {exc.strerror}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{p.name}: not valid TOML: {exc}") from exc


def check_keys(
    table: Mapping[str, Any], allowed: set[str], where: str, *, error: type[InputError]
) -> None:
    """Raise ``error`` naming the first key of ``table`` that is not in ``allowed``."""
    for key in table:
        if key not in allowed:
            raise error(
                f"{where}: unknown key {key!r}; allowed keys are {', '.join(sorted(allowed))}"
            )
