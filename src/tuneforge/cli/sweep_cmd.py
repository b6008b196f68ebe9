"""`tuneforge sweep CONFIG [--data-sizes 250,500] [--grid KEY=V1,V2 ...] [--eval FILE] [--labels 0,1] [--out DIR]
[key=value ...]`."""

from __future__ import annotations

import json
from typing import Optional

import typer

SWEEP_HELP = """Compare runs that differ in one thing or several: data size (is more data worth it?) and any config
keys (which method, which learning rate?). Train one run per cell, evaluate each, chart and tabulate them.

\b
Examples:
  tuneforge sweep examples/quickstart.yaml --data-sizes 250,500,1000,2000 --eval dev.jsonl
  tuneforge sweep cls.yaml --data-sizes 32,64,128 --eval dev.jsonl --labels 0,1 --eval-samples 200 train.epochs=1
  tuneforge sweep cls.yaml --data-sizes 500 --grid method.type=lora,dora,ia3,prompt,adalora \\
      --grid train.learning_rate=1e-4,2e-4 --eval dev.jsonl --labels 0,1 --eval-samples 200    (method shoot-out)

\b
Data sizes: every size trains with the same config and seed on a nested subset (the first N rows of one seeded
shuffle of the training data, so 250 ⊂ 500 ⊂ ...).
Grid: --grid KEY=V1,V2,... (repeatable) varies any config key; the cells are every data size × every combination
of the grid values (the shoot-out above: 5 methods × 2 learning rates = 10 runs). Values are written as in
key=value overrides. Without --data-sizes a grid trains on all training rows. A cell that sets method.type to
another method than the config's starts that method from its defaults: the config's method keys it does not
accept are dropped (the plan printed first says which), the ones it accepts are kept. Every cell is validated
before anything trains. Each cell trains in its own process, so its peak memory is measured alone.

\b
Each run is evaluated on the same rows: eval loss always, accuracy and macro F1 with --labels (default:
eval.classification.labels of the config). Eval rows: --eval, else data.eval, else the data.val_size hold-out.
The table has a row per cell: its grid values and size, epochs, steps, training seconds, seconds per optimizer
step, trainable share of the parameters (%), peak RSS of its training process (MB), final train loss, eval loss,
accuracy and F1 (with labels) and the run id. The chart: metric vs. data size and vs. training time for a pure
data-size sweep; with a grid, one bar chart per measure over the cells.
Runs are recorded in the registry as one group (`tuneforge runs list --group ID`).
Output: OUT/{sweep.json, sweep.png, data/, configs/, <cell>/ (one run folder per cell: nN, or nN-key=value-...)}.
Re-running the same command skips finished cells and resumes an interrupted one.
"""


def _split(text: Optional[str]) -> Optional[list[str]]:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def register(app: typer.Typer) -> None:
    @app.command("sweep", help=SWEEP_HELP)
    def sweep_cmd(
        config: str = typer.Argument(..., help="YAML run config, as for `tuneforge train` (or a first key=value)"),
        overrides: Optional[list[str]] = typer.Argument(None, help="dotted overrides, e.g. train.epochs=1"),
        data_sizes: Optional[str] = typer.Option(None, "--data-sizes",
                                                 help="Comma list of training-set sizes (rows). Optional with "
                                                      "--grid (then: all training rows)."),
        grid: Optional[list[str]] = typer.Option(None, "--grid",
                                                 help="KEY=V1,V2,... : one cell per value (repeat for a product), "
                                                      "e.g. --grid method.type=lora,ia3"),
        eval_file: Optional[str] = typer.Option(None, "--eval", help="Evaluation file (rows with answers)."),
        labels: Optional[str] = typer.Option(None, help="Comma list of labels (e.g. 0,1): classification metrics."),
        mode: Optional[str] = typer.Option(None, help="Classification mode: score (default) or generate."),
        eval_samples: Optional[int] = typer.Option(None, "--eval-samples", help="Evaluate the first N eval rows."),
        out: Optional[str] = typer.Option(None, "--out", "-o", help="Sweep folder (default runs/sweep-<config>)."),
        batch_size: int = typer.Option(8, "--eval-batch-size", help="Rows per forward pass when evaluating."),
        eval_loss: bool = typer.Option(True, "--eval-loss/--no-eval-loss",
                                       help="Also measure the eval loss when --labels is given (each run evaluates "
                                            "the rows while training)."),
        as_json: bool = typer.Option(False, "--json", help="Print sweep.json to stdout as well."),
    ) -> None:
        from pathlib import Path

        from tuneforge.config.load import config_arguments, load_config
        from tuneforge.sweep.plot import print_table
        from tuneforge.sweep.runner import run_sweep
        from tuneforge.utils.console import console

        config, overrides = config_arguments(config, overrides)
        cfg = load_config(config, overrides)
        name = Path(config).stem if config else f"{cfg.stage.type}-{cfg.method.type}"
        out_dir = out or str(Path("runs") / f"sweep-{name}")
        result = run_sweep(cfg, data_sizes, out=out_dir, grid=grid, config_path=config, overrides=overrides,
                           eval_file=eval_file, labels=_split(labels), mode=mode, eval_samples=eval_samples,
                           eval_batch_size=batch_size, eval_loss=eval_loss)
        print_table(result.state)
        console.print(f"sweep folder {result.out}; chart {result.chart}; "
                      f"registry group {result.state['group_id']} (`tuneforge runs list --group ...`)")
        if as_json:
            typer.echo(json.dumps(result.state, indent=2, default=str))
        if result.status == "interrupted":
            console.print("[yellow]interrupted[/yellow]: run the same command again to continue the sweep.")
            raise typer.Exit(130)
