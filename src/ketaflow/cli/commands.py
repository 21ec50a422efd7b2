"""Registry of subcommands. Each module under ``ketaflow.cli`` adds its commands here."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach every subcommand to ``app``."""
    from ketaflow.cli import demo, pk_commands

    pk_commands.register(app)
    app.command("demo")(demo.demo)
    from ketaflow.cli import sim_commands

    sim_commands.register(app)
