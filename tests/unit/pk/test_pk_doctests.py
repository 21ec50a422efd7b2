"""The examples in the pk modules' docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["ketaflow.pk.schedule", "ketaflow.pk.effect", "ketaflow.pk.solve", "ketaflow.pk.library"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
