"""Registry of subcommands. Each module under ``ketaflow.cli`` adds its commands here."""

from __future__ import annotations

import importlib

import typer

# One line per command module, so that parallel work merges without conflicts.
_MODULES = (
    "ketaflow.cli.pk_commands",
    "ketaflow.cli.dosing_commands",
    "ketaflow.cli.tci_commands",
    "ketaflow.cli.service_commands",
    "ketaflow.cli.demo",
    "ketaflow.cli.sim_commands",
)


def register(app: typer.Typer) -> None:
    """Attach every subcommand to ``app``."""
    for name in _MODULES:
        importlib.import_module(name).register(app)
