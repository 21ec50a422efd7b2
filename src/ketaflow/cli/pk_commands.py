"""Pharmacology commands: ``ketaflow models`` and ``ketaflow simulate``."""

from __future__ import annotations

import typer

from ketaflow.pk.library import list_models


def models() -> None:
    """List the PK model library with sources."""
    for m in list_models():
        mark = " (default)" if m.is_default else ""
        typer.echo(f"{m.id}{mark}\t{m.name}\t{m.drug}\t{m.source.get('doi', '')}")


def register(app: typer.Typer) -> None:
    """Attach the pharmacology commands."""
    app.command("models")(models)
