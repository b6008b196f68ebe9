"""`tuneforge stages`: the training stages, what data each trains on, and their parameters (from the stage table)."""

from __future__ import annotations

import typer


def params_table(kind: str, plugin):
    """A plug-in's (stage's or method's) parameters: name, default and meaning, titled with what it does."""
    from rich.table import Table

    table = Table("parameter", "default", "meaning", title=f"{kind} {plugin.name}: {plugin.description}")
    for key, field in plugin.Params.model_fields.items():
        table.add_row(key, repr(field.default), field.description or "")
    return table


def register(app: typer.Typer) -> None:
    @app.command("stages")
    def stages_cmd(
        name: str = typer.Argument(None, help="Show one stage's parameters in full (e.g. dpo)."),
    ) -> None:
        """List the training stages (`stage:` in a config) with the data they need and their parameters.

        A stage's parameters go beside its name: `stage: {type: dpo, beta: 0.1, loss: ipo}`, or on the command line
        as `stage=dpo stage.beta=0.1`.
        """
        from rich.table import Table

        from tuneforge.stages import STAGES, get_stage
        from tuneforge.stages.base import KIND_DESCRIPTIONS
        from tuneforge.utils.console import console

        if name:
            console.print(params_table("stage", get_stage(name)))
            return
        table = Table("stage", "trains on", "parameters", "what it does")
        for stage in STAGES.values():
            kinds = " or ".join(KIND_DESCRIPTIONS[k] for k in stage.accepts)
            params = ", ".join(f"{k}={f.default!r}" for k, f in stage.Params.model_fields.items()) or "-"
            table.add_row(stage.name, kinds, params, stage.description)
        console.print(table)
