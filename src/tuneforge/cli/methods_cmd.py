"""`tuneforge methods`: the training methods, their parameters, and which stages each works with (from the method
table and the compatibility table)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("methods")
    def methods_cmd(
        name: str = typer.Argument(None, help="Show one method's parameters in full (e.g. ia3)."),
    ) -> None:
        """List the training methods (`method:` in a config), what each trains, whether its result merges into the
        base, its auto learning rate, and the stage × method matrix of what runs.

        A method's parameters go beside its name: `method: {type: dora, r: 16}`, or on the command line as
        `method.type=dora method.r=16`.
        """
        from rich.table import Table

        from tuneforge.cli.stages_cmd import params_table
        from tuneforge.config import compat
        from tuneforge.methods import METHODS, get_method
        from tuneforge.stages import STAGES
        from tuneforge.utils.console import console

        if name:
            console.print(params_table("method", get_method(name)))
            return
        table = Table("method", "result", "merges", "auto lr", "what trains")
        for m in METHODS.values():
            merges = "yes" if m.artifact == "adapter" and m.mergeable else ("-" if m.artifact == "model" else "no")
            table.add_row(m.name, m.artifact, merges, f"{m.base_lr:g}", m.description)
        console.print(table)
        matrix = Table("method", *STAGES, title="what runs (✓) — `tuneforge methods NAME` for parameters")
        for m in METHODS:
            matrix.add_row(m, *("✓" if compat.supported(s, m) else "[red]✗[/red]" for s in STAGES))
        console.print(matrix)
        for rule in compat.RULES:
            where = ", ".join(f"{axis} {'/'.join(v)}" for axis, v in rule.when.items())
            console.print(f"[red]✗[/red] {where}: {rule.reason}. Instead: {rule.instead}.")
