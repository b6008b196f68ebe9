"""`tuneforge` command line: parse arguments, call the library, print results. No logic lives here.

Each command group is its own module with a `typer.Typer` named `app` (or a function), mounted below.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from tuneforge.utils.console import console
from tuneforge.utils.errors import TuneforgeError

app = typer.Typer(
    name="tuneforge",
    help="Fine-tune, evaluate, use and record LLMs. Start with `tuneforge train examples/quickstart.yaml`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# (module, attribute, command group name or None for top-level commands registered by the module itself)
_GROUPS = [
    ("tuneforge.cli.train_cmd", "register", None),
    ("tuneforge.cli.use_cmd", "register", None),
    ("tuneforge.cli.data_cmd", "app", "data"),
    ("tuneforge.cli.eval_cmd", "app", "eval"),
    ("tuneforge.cli.runs_cmd", "app", "runs"),
    ("tuneforge.cli.sweep_cmd", "register", None),
    ("tuneforge.cli.config_cmd", "app", "config"),
    ("tuneforge.cli.doctor_cmd", "register", None),
    ("tuneforge.cli.stages_cmd", "register", None),
    ("tuneforge.cli.methods_cmd", "register", None),
    ("tuneforge.cli.serve_cmd", "register", None),
    ("tuneforge.cli.ui_cmd", "register", None),
    ("tuneforge.cli.keys_cmd", "app", "keys"),
]


def _mount() -> None:
    for module, attr, name in _GROUPS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name == module:  # group not built yet
                continue
            raise
        obj = getattr(mod, attr)
        if name is None:
            obj(app)
        else:
            app.add_typer(obj, name=name)


_mount()


def main() -> None:
    """Entry point: user errors print a clear message (no traceback) and exit 2."""
    try:
        app()
    except TuneforgeError as err:
        console.print(f"[bold red]error:[/bold red] {err.message}")
        if err.hint:
            console.print(f"[yellow]hint:[/yellow] {err.hint}")
        if os.environ.get("TUNEFORGE_DEBUG"):
            raise
        sys.exit(2)
