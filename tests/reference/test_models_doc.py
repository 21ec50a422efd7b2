"""docs/models.md carries the model tables that benchmarks/model_table.py computes now."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "model_table", ROOT / "benchmarks" / "model_table.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_doc_tables_are_current() -> None:
    gen = _generator()
    doc = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    start, end = doc.index(gen.START), doc.index(gen.END) + len(gen.END)
    assert doc[start:end] == gen.render(), (
        "docs/models.md is stale: run PYTHONPATH=src python benchmarks/model_table.py --write"
    )


def test_models_doc_names_every_shipped_model() -> None:
    from ketaflow.pk.library import list_models

    doc = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    for m in list_models():
        assert f"`{m.id}`" in doc, m.id
