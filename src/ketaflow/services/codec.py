"""JSON form of the clinical domain's frozen dataclasses, and back.

The service stores domain snapshots (a :class:`~ketaflow.clinical.SessionSnapshot` with its
history, pre-assessment, verification, infusion entries and discharge decision) as JSON text.
The conversion is generic and driven by each dataclass's type hints, so a field added to the
domain is stored without a change here. Only fields passed to ``__init__`` are stored (derived
caches such as ``VitalSet._by_kind`` are rebuilt by the constructor).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from datetime import date, datetime
from enum import Enum
from functools import cache
from typing import Any, TypeVar, get_args, get_origin

from ketaflow.errors import InputError

T = TypeVar("T")


def to_jsonable(value: Any) -> Any:
    """Plain JSON data for ``value`` (dataclasses, enums, times, tuples, sets, mappings)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init
        }
    if isinstance(value, frozenset | set):
        return sorted((to_jsonable(v) for v in value), key=repr)
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in value.items()}
    raise InputError(f"cannot store a {type(value).__name__} as JSON", field="value")


def dumps(value: Any) -> str:
    """Compact JSON text of ``value`` (see :func:`to_jsonable`)."""
    return json.dumps(to_jsonable(value), separators=(",", ":"), sort_keys=True)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_jsonable(tp: Any, data: Any) -> Any:
    """Rebuild a value of type ``tp`` from :func:`to_jsonable` output."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        options = [a for a in get_args(tp) if a is not type(None)]
        last: Exception | None = None
        for option in options:
            try:
                return from_jsonable(option, data)
            except (TypeError, ValueError, KeyError) as exc:
                last = exc
        raise ValueError(f"no option of {tp} fits {data!r}") from last
    if tp is Any:
        return data
    if origin in (tuple,):
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], v) for v in data)
        return tuple(from_jsonable(a, v) for a, v in zip(args, data, strict=True))
    if origin in (frozenset, set):
        (arg,) = get_args(tp)
        return frozenset(from_jsonable(arg, v) for v in data)
    if origin in (list,):
        (arg,) = get_args(tp)
        return [from_jsonable(arg, v) for v in data]
    if origin in (dict, typing.Mapping) or str(origin).endswith("Mapping'>"):
        key_tp, value_tp = get_args(tp)
        return {from_jsonable(key_tp, k): from_jsonable(value_tp, v) for k, v in data.items()}
    if isinstance(tp, type):
        if issubclass(tp, Enum):
            return tp(data)
        if tp is datetime:
            return datetime.fromisoformat(data)
        if tp is date:
            return date.fromisoformat(data)
        if tp is float:
            if isinstance(data, bool) or not isinstance(data, int | float):
                raise TypeError(f"expected a number, got {data!r}")
            return float(data)
        if tp is bool:
            if not isinstance(data, bool):
                raise TypeError(f"expected a boolean, got {data!r}")
            return data
        if tp is int:
            if isinstance(data, bool) or not isinstance(data, int):
                raise TypeError(f"expected an integer, got {data!r}")
            return data
        if tp is str:
            if not isinstance(data, str):
                raise TypeError(f"expected text, got {data!r}")
            return data
        if dataclasses.is_dataclass(tp):
            hints = _hints(tp)
            kwargs = {
                f.name: from_jsonable(hints[f.name], data[f.name])
                for f in dataclasses.fields(tp)
                if f.init and f.name in data
            }
            return tp(**kwargs)
    raise TypeError(f"cannot rebuild a {tp!r} from JSON")


def loads(tp: type[T], text: str) -> T:
    """The ``tp`` value stored as ``text`` by :func:`dumps`."""
    value: T = from_jsonable(tp, json.loads(text))
    return value
