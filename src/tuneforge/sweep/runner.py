"""`run_sweep`: one training run per cell — a data size × a combination of `--grid` values (tuneforge.sweep.grid)
— on nested subsets, each evaluated and recorded in one registry group.

Layout of the sweep folder OUT:

    OUT/sweep.json              state + results (re-read by a re-run; the source of the table and the chart);
                                `cells` maps every cell name to its grid values
    OUT/sweep.png               pure data-size sweep: metric vs. data size and vs. training time;
                                with a grid: one bar chart per measure over the cells
    OUT/data/train-n<N>.jsonl   the nested subsets (each a prefix of the next)
    OUT/data/eval-<fp>.jsonl    the eval rows, given to every run as data.eval: the run's eval_loss is measured
                                by the trainer on them (the sweep reads it from the run's final metrics)
    OUT/configs/<cell>.yaml     the cell's run config, as its training process reads it
    OUT/<cell>/                 a normal training run folder (run.json, adapter/ or model/, metrics.jsonl, ...);
                                <cell> is n<N> for a pure data-size sweep, n<N>-<key>=<value>-... with a grid
    OUT/<cell>/sweep_eval.json  that run's evaluation (metrics + per-example predictions for classification)

Every cell trains in its own process (tuneforge.sweep.child), so its peak RSS is measured for that cell alone;
the sweep records per cell the trainable share of the parameters (run.json "parameters"), that peak RSS, training
seconds per optimizer step, the final train loss and the evaluation.

Re-running the same command continues: a cell whose run finished is not trained again, a cell whose run was
interrupted resumes from its checkpoint (the training runner's own resume), and an evaluation already done on the
same eval rows is not repeated. New sizes and grid values may be added on a re-run; a sweep folder holding a
different base config or different training data is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from tuneforge.config.load import save_config
from tuneforge.sweep.child import train_in_child
from tuneforge.sweep.grid import Cell, describe_dropped, parse_grid, plan_cells
from tuneforge.sweep.plan import (EvalSet, Pool, check_sizes, load_eval_set, load_pool, parse_sizes, subset_format,
                                  write_eval_rows, write_subset)
from tuneforge.train.output import read_run_file
from tuneforge.utils.console import console
from tuneforge.utils.errors import ConfigError, TuneforgeError
from tuneforge.utils.io import atomic_write_json

STATE_FILE = "sweep.json"
CHART_FILE = "sweep.png"
EVAL_FILE = "sweep_eval.json"


@dataclass
class SweepResult:
    out: Path
    status: str  # succeeded | interrupted
    state: dict
    chart: Path | None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def signature(cfg, pool: Pool) -> str:
    """What must not change between runs of one sweep: the config (minus output, eval and tags) and the data.
    Settings at their defaults are left out, so a setting a newer tuneforge adds does not orphan older sweeps."""
    conf = cfg.model_dump(mode="json", exclude_defaults=True)
    for key in ("output", "eval", "tags"):
        conf.pop(key, None)
    blob = json.dumps({"config": conf, "pool": pool.fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_state(out: Path, sig: str) -> dict:
    """The existing sweep.json of OUT (checked to belong to this sweep) or a fresh state."""
    path = out / STATE_FILE
    if not path.is_file():
        if out.is_dir() and any(p.name != "data" for p in out.iterdir()):
            raise ConfigError(f"sweep folder {out} is not empty and holds no {STATE_FILE}",
                              hint="choose another --out")
        return {"version": 1, "group_id": f"sweep-{uuid.uuid4().hex[:12]}", "created": _now(), "signature": sig,
                "runs": []}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON ({err.msg})", hint="delete it or choose another --out") from None
    if state.get("signature") != sig:
        raise ConfigError(f"{out} holds a sweep of a different config or different training data",
                          hint="choose another --out (only sizes and the evaluation may change between re-runs)")
    return state


def run_config(cell: Cell, out: Path, data_file: Path, eval_file: Path | None = None):
    """The run config of one cell: the subset file as the only training data, the sweep's eval rows as its
    validation data (the trainer reports eval_loss on them), its own output folder, sweep tags."""
    c = cell.cfg.model_copy(deep=True)
    c.data.train = [{"path": str(data_file), "format": subset_format(c.stage.type)}]
    c.data.eval = [{"path": str(eval_file), "format": subset_format(c.stage.type)}] if eval_file else []
    c.data.val_size = 0.0  # the sweep chose the eval rows itself
    c.data.max_samples = None
    c.data.mix = "concat"
    c.train.load_best = None  # no validation rows inside a sweep cell: nothing to select on
    c.train.early_stopping_patience = None
    c.eval.classification = None  # evaluated once after training, not every epoch (keeps train time clean)
    c.output.dir = str(out / cell.name)
    c.output.run_name = f"{out.name}-{cell.name}"
    c.output.overwrite = False
    grid_tags = [f"{k}={v}" for k, v in cell.overrides.items()]
    c.tags = list(dict.fromkeys([*c.tags, "sweep", f"data_size={cell.size}", *grid_tags]))
    return c


def config_file_path(out: Path, cell: Cell) -> Path:
    return out / "configs" / f"{cell.name}.yaml"


def _entry_cell(entry: dict) -> str:
    return entry.get("cell") or f"n{entry['size']}"  # sweep.json written before grids existed: sizes only


def _entry(state: dict, cell: Cell) -> dict:
    for e in state["runs"]:
        if _entry_cell(e) == cell.name:
            e.update({"cell": cell.name, "overrides": cell.overrides, "dropped": cell.dropped})
            return e
    e = {"cell": cell.name, "size": cell.size, "overrides": cell.overrides, "dropped": cell.dropped,
         "status": "pending"}
    state["runs"].append(e)
    state["runs"].sort(key=lambda r: r["size"])  # stable: the cells of one size keep their grid order
    return e


def training_seconds(rows: list[dict]) -> float:
    """Training time over every segment of a run that was interrupted and resumed (each process logs its own
    clock): a segment's `train_runtime`, or its last `elapsed_s` when the process died before summing up."""
    total, last_elapsed, last_step = 0.0, 0.0, -1
    for r in rows:
        if "train_runtime" in r:
            total, last_elapsed = total + float(r["train_runtime"]), 0.0
            continue
        if "elapsed_s" not in r or "loss" not in r:
            continue
        if r["elapsed_s"] < last_elapsed or r.get("step", 0) <= last_step:  # a new process took over
            total += last_elapsed
        last_elapsed, last_step = float(r["elapsed_s"]), r.get("step", 0)
    return round(total + last_elapsed, 2)


def _trainable_percent(info: dict) -> float | None:
    params = info.get("parameters") or {}
    if not params.get("total"):
        return None
    return round(100.0 * params["trainable"] / params["total"], 4)


def _per_step(seconds, steps) -> float | None:
    return round(seconds / steps, 4) if seconds and steps else None


def _train_stats(run_dir: Path, info: dict) -> dict:
    from tuneforge.train.plots import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl")
    step_loss = {r["step"]: r["loss"] for r in rows if "loss" in r and "step" in r}  # a redone step: last value
    m = info.get("metrics") or {}
    seconds = training_seconds(rows) or m.get("train_runtime")
    steps = max((r["step"] for r in rows if "step" in r), default=None)
    return {"train_seconds": seconds,
            "train_loss": sum(step_loss.values()) / len(step_loss) if step_loss else m.get("train_loss"),
            "final_loss": step_loss[max(step_loss)] if step_loss else None,
            "eval_loss": m.get("eval_loss"), "epochs": m.get("epoch"), "steps": steps,
            "seconds_per_step": _per_step(seconds, steps), "trainable_percent": _trainable_percent(info),
            "final_dir": info.get("final_dir")}


def _lookup_run_id(group_id: str, run_dir: Path) -> str | None:
    """The registry id of a finished run of this group (when the sweep stopped before writing it down)."""
    try:
        from tuneforge.registry.queries import list_runs
        from tuneforge.registry.store import open_store

        runs = list_runs(open_store(), group=group_id, kind="train", status="succeeded")
    except Exception:  # noqa: BLE001 - the registry is optional for a sweep
        return None
    return next((r.id for r in runs if r.output_dir == str(run_dir)), None)


def _record_eval(run_id: str | None, name: str, metrics: dict) -> None:
    if not run_id:
        return
    from tuneforge.registry.api import RunRecorder

    try:
        from tuneforge.registry.store import open_store

        store = open_store()
    except Exception as err:  # noqa: BLE001
        console.print(f"[yellow]warning:[/yellow] run registry: recording the sweep eval failed ({err})")
        return
    recorder = RunRecorder(store, run_id)  # never raises
    recorder.add_eval(name, metrics)
    recorder.close()  # written before the sweep moves on


def _write_cell_inputs(cell: Cell, out: Path, pool: Pool, eval_set: EvalSet | None) -> tuple[Path, bool]:
    """The cell's subset, the eval rows (when the run measures the eval loss) and its run config file."""
    stage = cell.cfg.stage.type
    data_file = write_subset(pool, cell.size, out, stage)
    with_loss = eval_set is not None and eval_set.with_loss
    eval_file = write_eval_rows(eval_set, out, stage) if with_loss else None
    path = config_file_path(out, cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_config(run_config(cell, out, data_file, eval_file), path)
    return path, with_loss


def _train_cell_process(cell: Cell, out: Path, pool: Pool, entry: dict, group_id: str,
                        eval_set: EvalSet | None) -> str:
    """Train the cell in its own process (tuneforge.sweep.child); its status. A failed run is an error."""
    config_file, with_loss = _write_cell_inputs(cell, out, pool, eval_set)
    console.rule(f"sweep: {cell.name} ({cell.size}/{len(pool.records)} rows)")
    child = train_in_child(config_file, group_id)
    if child.peak_rss_mb is not None:
        entry["peak_rss_mb"] = max(child.peak_rss_mb, entry.get("peak_rss_mb") or 0.0)
    entry["run_id"] = (read_run_file(out / cell.name) or {}).get("run_id") or entry.get("run_id")
    entry["eval_loss_rows"] = eval_set.fingerprint if with_loss else None
    entry["status"] = child.status
    if child.status == "failed":
        raise TuneforgeError(f"sweep cell {cell.name}: training {child.describe_failure()} (its output is above)",
                             hint="fix the cause and run the same command again: finished cells are kept, "
                                  "this one resumes from its last checkpoint")
    return child.status


def train_cell(cell: Cell, out: Path, pool: Pool, entry: dict, group_id: str,
               eval_set: EvalSet | None = None) -> bool:
    """Train one cell unless its run already finished; True when a finished run exists afterwards. With an
    `eval_set` that wants the eval loss, the run evaluates its rows (data.eval)."""
    run_dir = out / cell.name
    info = read_run_file(run_dir) or {}
    entry["output_dir"] = str(run_dir)
    if info.get("status") == "succeeded":
        console.print(f"[dim]{cell.name}: finished run in {run_dir}, not training again[/dim]")
        entry["run_id"] = info.get("run_id") or entry.get("run_id") or _lookup_run_id(group_id, run_dir)
    else:
        if _train_cell_process(cell, out, pool, entry, group_id, eval_set) != "succeeded":
            return False
        info = read_run_file(run_dir) or {}
    entry.update(_train_stats(run_dir, info))
    entry["status"] = "trained"
    return True


def _run_eval_loss(entry: dict, eval_set: EvalSet) -> dict:
    """The eval loss the cell's training run measured on these eval rows ({} when it measured other rows)."""
    if entry.get("eval_loss_rows") == eval_set.fingerprint and entry.get("eval_loss") is not None:
        return {"eval_loss": entry["eval_loss"]}
    console.print(f"[yellow]warning:[/yellow] {_entry_cell(entry)} was trained without these eval rows, so it has "
                  f"no eval loss on them; delete {entry.get('output_dir')} to train it again")
    return {}


def evaluate_cell(cell: Cell, entry: dict, eval_set: EvalSet, batch_size: int) -> None:
    """Evaluate a trained cell unless it was evaluated on the same rows before; record it in the registry."""
    from tuneforge.sweep.evaluate import evaluate

    if entry.get("eval_key") == eval_set.key() and entry.get("metrics"):
        entry["status"] = "succeeded"
        return
    console.print(f"[cyan]sweep[/cyan]: evaluating {cell.name} on {len(eval_set.records)} rows of "
                  f"{eval_set.name}…")
    metrics, detail = evaluate(cell.cfg, Path(entry["final_dir"]), eval_set, batch_size=batch_size)
    if eval_set.with_loss:
        metrics.update(_run_eval_loss(entry, eval_set))
    metrics["eval_rows"] = len(eval_set.records)
    atomic_write_json(Path(entry["output_dir"]) / EVAL_FILE,
                      {"eval": eval_set.describe(), "metrics": metrics, "classification": detail})
    _record_eval(entry.get("run_id"), f"sweep:{eval_set.name}", metrics)
    entry.update({"metrics": metrics, "eval_key": eval_set.key(), "status": "succeeded"})


SWEEP_STAGES = ("pt", "sft")  # the subsets are written as text or conversations


def _sweep_sizes(sizes, grid: dict, pool: Pool) -> list[int]:
    """The data sizes: as given, or all training rows when only a grid is given."""
    if sizes is None or sizes == "":
        if not grid:
            raise ConfigError("a sweep needs data sizes, a grid, or both",
                              hint="e.g. --data-sizes 250,500,1000, or --grid method.type=lora,ia3")
        return [len(pool.records)]
    sizes = parse_sizes(sizes)
    check_sizes(sizes, pool)
    return sizes


def print_cell_plan(cells: list[Cell], cfg, group_id: str) -> None:
    """The cells about to run, and which base method keys each method switch dropped."""
    console.print(f"[cyan]sweep[/cyan] {group_id}: {len(cells)} cells")
    for cell in cells:
        note = describe_dropped(cell, cfg.method.type)
        console.print(f"  {cell.name}" + (f"  [yellow]{note}[/yellow]" if note else ""), soft_wrap=True)


def _record_plan(state: dict, cells: list[Cell], grid: dict) -> None:
    """Cells (name → overrides) and grid values of this and earlier invocations, in sweep.json."""
    state["cells"] = {**state.get("cells", {}), **{c.name: c.overrides for c in cells}}
    known = state.get("grid", {})
    for key, values in grid.items():
        known[key] = list(dict.fromkeys([*known.get(key, []), *values]))
    state["grid"] = known


def _run_cells(cells: list[Cell], state: dict, out: Path, pool: Pool, eval_set: EvalSet, batch_size: int) -> str:
    for cell in cells:
        entry = _entry(state, cell)
        if not train_cell(cell, out, pool, entry, state["group_id"], eval_set):
            return "interrupted"
        atomic_write_json(out / STATE_FILE, state)
        evaluate_cell(cell, entry, eval_set, batch_size)
        atomic_write_json(out / STATE_FILE, state)
    return "succeeded"


def _chart(state: dict, eval_set: EvalSet, out: Path) -> Path | None:
    from tuneforge.sweep.plot import plot_grid, plot_sweep

    done = [e for e in state["runs"] if e.get("status") == "succeeded" and e.get("eval_key") == eval_set.key()]
    if not done:
        return None
    if any(e.get("overrides") for e in done):
        return plot_grid(done, state, out / CHART_FILE)
    return plot_sweep(done, state, out / CHART_FILE)


def run_sweep(cfg, sizes=None, *, out: str | Path, grid: list[str] | dict | None = None,
              config_path: str | None = None, overrides: list[str] | None = None, eval_file: str | None = None,
              labels: list[str] | None = None, mode: str | None = None, eval_samples: int | None = None,
              eval_batch_size: int = 8, eval_loss: bool = True) -> SweepResult:
    """Train and evaluate one run per cell: data size × grid values (see module docstring). Sizes larger than the
    data, an invalid cell, bad labels and a foreign sweep folder are errors before any training."""
    from tuneforge.sweep.plot import primary_metric

    if cfg.stage.type not in SWEEP_STAGES:
        raise ConfigError(f"sweep trains stage {', '.join(SWEEP_STAGES)} runs; this config's stage is "
                          f"{cfg.stage.type}", hint="sweep the SFT run that comes before it")
    grid = grid if isinstance(grid, dict) else parse_grid(grid)
    out = Path(out).expanduser().resolve()
    pool = load_pool(cfg)
    sizes = _sweep_sizes(sizes, grid, pool)
    cells = plan_cells(cfg, sizes, grid)
    eval_set = load_eval_set(cfg, pool, eval_file, labels, mode, eval_samples, eval_loss)
    state = load_state(out, signature(cfg, pool))
    out.mkdir(parents=True, exist_ok=True)
    state.update({"updated": _now(), "config_path": str(config_path) if config_path else None,
                  "overrides": list(overrides or []), "base_model": cfg.model.name, "stage": cfg.stage.type,
                  "method": cfg.method.type, "data_seed": cfg.data.seed, "train_seed": cfg.train.seed,
                  "pool": {"name": pool.name, "fingerprint": pool.fingerprint, "rows": len(pool.records),
                           "held_out": len(pool.held_out), "skipped": pool.skipped},
                  "eval": eval_set.describe(), "metric": primary_metric(eval_set),
                  "sizes": sorted(set(state.get("sizes", [])) | set(sizes))})
    _record_plan(state, cells, grid)
    if grid:
        print_cell_plan(cells, cfg, state["group_id"])
    atomic_write_json(out / STATE_FILE, state)
    try:
        status = _run_cells(cells, state, out, pool, eval_set, eval_batch_size)
    finally:
        state["updated"] = _now()
        atomic_write_json(out / STATE_FILE, state)
    chart = _chart(state, eval_set, out)
    state["chart"] = str(chart) if chart else None
    atomic_write_json(out / STATE_FILE, state)
    return SweepResult(out, status, state, chart)
