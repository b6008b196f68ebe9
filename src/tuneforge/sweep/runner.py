"""`run_sweep`: one training run per data size on nested subsets, each evaluated and recorded as one registry group.

Layout of the sweep folder OUT:

    OUT/sweep.json              state + results (re-read by a re-run; the source of the table and the chart)
    OUT/sweep.png               metric vs. data size and vs. training time
    OUT/data/train-n<N>.jsonl   the nested subsets (each a prefix of the next)
    OUT/data/eval-<fp>.jsonl    the eval rows, given to every run as data.eval: the run's eval_loss is measured
                                by the trainer on them (the sweep reads it from the run's final metrics)
    OUT/n<N>/                   a normal training run folder (run.json, adapter/ or model/, metrics.jsonl, ...)
    OUT/n<N>/sweep_eval.json    that run's evaluation (metrics + per-example predictions for classification)

Re-running the same command continues: a size whose run finished is not trained again, a size whose run was
interrupted resumes from its checkpoint (the training runner's own resume), and an evaluation already done on the
same eval rows is not repeated. A sweep folder holding a different config or different training data is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from tuneforge.sweep.plan import (EvalSet, Pool, check_sizes, load_eval_set, load_pool, parse_sizes, subset_format,
                                  write_eval_rows, write_subset)
from tuneforge.utils.console import console
from tuneforge.utils.errors import ConfigError
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
    """What must not change between runs of one sweep: the config (minus output, eval and tags) and the data."""
    conf = cfg.model_dump(mode="json")
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


def size_config(cfg, size: int, out: Path, data_file: Path, eval_file: Path | None = None):
    """The run config of one size: the subset file as the only training data, the sweep's eval rows as its
    validation data (the trainer reports eval_loss on them), its own output folder, sweep tags."""
    c = cfg.model_copy(deep=True)
    c.data.train = [{"path": str(data_file), "format": subset_format(cfg.stage.type)}]
    c.data.eval = [{"path": str(eval_file), "format": subset_format(cfg.stage.type)}] if eval_file else []
    c.data.val_size = 0.0  # the sweep chose the eval rows itself
    c.data.max_samples = None
    c.data.mix = "concat"
    c.train.load_best = None  # no validation rows inside a sweep cell: nothing to select on
    c.train.early_stopping_patience = None
    c.eval.classification = None  # evaluated once after training, not every epoch (keeps train time clean)
    c.output.dir = str(out / f"n{size}")
    c.output.run_name = f"{out.name}-n{size}"
    c.output.overwrite = False
    c.tags = list(dict.fromkeys([*cfg.tags, "sweep", f"data_size={size}"]))
    return c


def _entry(state: dict, size: int) -> dict:
    for e in state["runs"]:
        if e["size"] == size:
            return e
    e = {"size": size, "status": "pending"}
    state["runs"].append(e)
    state["runs"].sort(key=lambda r: r["size"])
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


def _train_stats(run_dir: Path, info: dict) -> dict:
    from tuneforge.train.plots import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl")
    step_loss = {r["step"]: r["loss"] for r in rows if "loss" in r and "step" in r}  # a redone step: last value
    m = info.get("metrics") or {}
    return {"train_seconds": training_seconds(rows) or m.get("train_runtime"),
            "train_loss": sum(step_loss.values()) / len(step_loss) if step_loss else m.get("train_loss"),
            "eval_loss": m.get("eval_loss"),
            "epochs": m.get("epoch"), "steps": max(step_loss, default=None), "final_dir": info.get("final_dir")}


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


def train_size(cfg, size: int, out: Path, pool: Pool, entry: dict, group_id: str,
               eval_set: EvalSet | None = None) -> bool:
    """Train one size unless its run already finished; True when a finished run exists afterwards. With an
    `eval_set` that wants the eval loss, the run evaluates its rows (data.eval)."""
    from tuneforge.train.output import read_run_file
    from tuneforge.train.runner import train

    run_dir = out / f"n{size}"
    info = read_run_file(run_dir) or {}
    entry["output_dir"] = str(run_dir)
    if info.get("status") == "succeeded":
        console.print(f"[dim]size {size}: finished run in {run_dir}, not training again[/dim]")
        entry.setdefault("run_id", None)
        entry["run_id"] = entry["run_id"] or _lookup_run_id(group_id, run_dir)
    else:
        data_file = write_subset(pool, size, out, cfg.stage.type)
        with_loss = eval_set is not None and eval_set.with_loss
        eval_file = write_eval_rows(eval_set, out, cfg.stage.type) if with_loss else None
        console.rule(f"sweep: size {size} ({size}/{len(pool.records)} rows)")
        result = train(size_config(cfg, size, out, data_file, eval_file), group_id=group_id)
        entry["run_id"] = result.run_id
        entry["eval_loss_rows"] = eval_set.fingerprint if with_loss else None
        if result.status != "succeeded":
            entry["status"] = result.status
            return False
        info = read_run_file(run_dir) or {}
    entry.update(_train_stats(run_dir, info))
    entry["status"] = "trained"
    return True


def _run_eval_loss(entry: dict, eval_set: EvalSet) -> dict:
    """The eval loss the size's training run measured on these eval rows ({} when it measured other rows)."""
    if entry.get("eval_loss_rows") == eval_set.fingerprint and entry.get("eval_loss") is not None:
        return {"eval_loss": entry["eval_loss"]}
    console.print(f"[yellow]warning:[/yellow] size {entry['size']} was trained without these eval rows, so it has "
                  f"no eval loss on them; delete {entry.get('output_dir')} to train it again")
    return {}


def evaluate_size(cfg, entry: dict, eval_set: EvalSet, batch_size: int) -> None:
    """Evaluate a trained size unless it was evaluated on the same rows before; record it in the registry."""
    from tuneforge.sweep.evaluate import evaluate

    if entry.get("eval_key") == eval_set.key() and entry.get("metrics"):
        entry["status"] = "succeeded"
        return
    console.print(f"[cyan]sweep[/cyan]: evaluating size {entry['size']} on {len(eval_set.records)} rows of "
                  f"{eval_set.name}…")
    metrics, detail = evaluate(cfg, Path(entry["final_dir"]), eval_set, batch_size=batch_size)
    if eval_set.with_loss:
        metrics.update(_run_eval_loss(entry, eval_set))
    metrics["eval_rows"] = len(eval_set.records)
    atomic_write_json(Path(entry["output_dir"]) / EVAL_FILE,
                      {"eval": eval_set.describe(), "metrics": metrics, "classification": detail})
    _record_eval(entry.get("run_id"), f"sweep:{eval_set.name}", metrics)
    entry.update({"metrics": metrics, "eval_key": eval_set.key(), "status": "succeeded"})


SWEEP_STAGES = ("pt", "sft")  # the subsets are written as text or conversations


def run_sweep(cfg, sizes, *, out: str | Path, config_path: str | None = None, overrides: list[str] | None = None,
              eval_file: str | None = None, labels: list[str] | None = None, mode: str | None = None,
              eval_samples: int | None = None, eval_batch_size: int = 8, eval_loss: bool = True) -> SweepResult:
    """Train and evaluate one run per data size (see module docstring). Sizes larger than the data, bad labels and
    a foreign sweep folder are errors before any training."""
    from tuneforge.sweep.plot import plot_sweep, primary_metric

    if cfg.stage.type not in SWEEP_STAGES:
        raise ConfigError(f"sweep trains stage {', '.join(SWEEP_STAGES)} runs; this config's stage is "
                          f"{cfg.stage.type}", hint="sweep the SFT run that comes before it")
    sizes = parse_sizes(sizes)
    out = Path(out).expanduser().resolve()
    pool = load_pool(cfg)
    check_sizes(sizes, pool)
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
    atomic_write_json(out / STATE_FILE, state)
    status = "succeeded"
    try:
        for size in sizes:
            entry = _entry(state, size)
            if not train_size(cfg, size, out, pool, entry, state["group_id"], eval_set):
                status = "interrupted"
                break
            atomic_write_json(out / STATE_FILE, state)
            evaluate_size(cfg, entry, eval_set, eval_batch_size)
            atomic_write_json(out / STATE_FILE, state)
    finally:
        state["updated"] = _now()
        atomic_write_json(out / STATE_FILE, state)
    done = [e for e in state["runs"] if e.get("status") == "succeeded" and e.get("eval_key") == eval_set.key()]
    chart = plot_sweep(done, state, out / CHART_FILE) if done else None
    state["chart"] = str(chart) if chart else None
    atomic_write_json(out / STATE_FILE, state)
    return SweepResult(out, status, state, chart)
