"""Reading the clinical data files (TOML inside the package, or a clinic's own file).

Errors are :class:`~ketaflow.errors.ProtocolError` naming the file, the table and the key, so a
clinic editing its own rule file sees exactly what to fix.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ketaflow.errors import ProtocolError


def read_packaged(name: str) -> dict[str, Any]:
    """Decode ``ketaflow/clinical/data/<name>``."""
    text = (resources.files("ketaflow.clinical") / "data" / name).read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"{name}: not valid TOML: {exc}") from exc


def read_file(path: str | Path) -> dict[str, Any]:
    """Decode a TOML file given by path (a clinic's own configuration)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProtocolError(f"cannot read {str(p)!r}: {exc.strerror}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"{p.name}: not valid TOML: {exc}") from exc


def check_keys(
    table: Mapping[str, Any], required: Iterable[str], optional: Iterable[str], where: str
) -> None:
    """Every required key is present and no unknown key appears."""
    req = set(required)
    allowed = req | set(optional)
    for key in table:
        if key not in allowed:
            raise ProtocolError(
                f"{where}: unknown key {key!r}; allowed keys: {', '.join(sorted(allowed))}"
            )
    for key in sorted(req):
        if key not in table:
            raise ProtocolError(f"{where}: missing required key {key!r}")


def get_str(table: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    """A non-empty string value."""
    value = table.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def get_number(
    table: Mapping[str, Any],
    key: str,
    where: str,
    *,
    default: float | None = None,
    minimum: float | None = None,
) -> float:
    """A finite number (int or float, not bool), optionally with a lower bound."""
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(f"{where}: {key!r} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ProtocolError(f"{where}: {key!r} must be >= {minimum:g}, got {value!r}")
    return float(value)


def get_optional_number(table: Mapping[str, Any], key: str, where: str) -> float | None:
    """A finite number or None when the key is absent."""
    if key not in table:
        return None
    return get_number(table, key, where)


def get_bool(table: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    """A boolean value."""
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError(f"{where}: {key!r} must be true or false, got {value!r}")
    return value


def get_str_list(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    """A non-empty list of non-empty strings."""
    value = table.get(key)
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v.strip() for v in value)
    ):
        raise ProtocolError(f"{where}: {key!r} must be a non-empty list of strings, got {value!r}")
    return tuple(value)
