"""``ketaflow demo``: what ``make run`` starts."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from ketaflow.pk.effect import DISSOCIATION, SBP_RISE
from ketaflow.pk.library import default_model
from ketaflow.pk.schedule import Schedule
from ketaflow.pk.solve import simulate


def demo(
    host: Annotated[str, typer.Option(help="Address to serve on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8000,
    weight_kg: Annotated[float, typer.Option("--weight", help="Demo patient weight, kg.")] = 70.0,
) -> None:
    """Show the standard antidepressant infusion (0.5 mg/kg over 40 min) for a demo patient."""
    model = default_model()
    schedule = Schedule.from_text("0.5 mg/kg over 40 min", weight_kg)
    times_min = np.arange(0.0, 120.0 + 1e-9, 10.0)
    pred = simulate(model.parameters(weight_kg=weight_kg), schedule, times_min)
    assert pred.ce_ng_per_ml is not None
    table = Table(
        title=f"{model.name}: 0.5 mg/kg over 40 min, {weight_kg:g} kg "
        f"(total {schedule.total_mg:.1f} mg)"
    )
    for col in ("min", "rate mg/h", "Cp ng/mL", "Ce ng/mL", "dissociation", "SBP rise mmHg"):
        table.add_column(col, justify="right")
    diss = DISSOCIATION.effect(pred.ce_ng_per_ml[0], enantiomer=model.enantiomer)
    sbp = SBP_RISE.effect(pred.ce_ng_per_ml[0], enantiomer=model.enantiomer)
    for i, t in enumerate(times_min):
        table.add_row(
            f"{t:g}",
            f"{pred.rate_mg_per_h[0, i]:.1f}",
            f"{pred.cp_ng_per_ml[0, i]:.1f}",
            f"{pred.ce_ng_per_ml[0, i]:.1f}",
            f"{diss[i]:.2f}",
            f"{sbp[i]:.1f}",
        )
    Console().print(table)
    typer.echo(
        "Decision support for supervised clinical use only. (The clinic service demo at "
        f"http://{host}:{port} arrives with the service.)",
        err=True,
    )


def register(app: typer.Typer) -> None:
    """Attach ``ketaflow demo``."""
    app.command("demo")(demo)
