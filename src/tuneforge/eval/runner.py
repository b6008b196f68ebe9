"""The eval runner: validate every input, load the model once, run benchmarks and task metrics, write the report.

Order matters for users: all task files are read and validated (file:line:field errors) and the chat template is
checked on the tokenizer *before* any model weights load. Results go to `--output`, or next to the run when an
adapter is evaluated (``<run>/eval/<time>-<what>/``), else ``$TUNEFORGE_HOME/eval/<time>-<model>/``. Each eval is
recorded in the run registry (kind ``eval``) when it is available.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tuneforge.eval.report import write_report
from tuneforge.eval.taskdata import TaskData, load_task_data
from tuneforge.eval.tasks import Task, load_tasks
from tuneforge.utils.console import console
from tuneforge.utils.errors import DataError
from tuneforge.utils.paths import tuneforge_home

SEP = "::"


@dataclass(frozen=True)
class ModelSpec:
    """A model (alias, folder, .gguf, hub id) and an optional PEFT adapter folder on top."""

    model: str
    adapter: str | None = None

    @property
    def label(self) -> str:
        return f"{self.model}{SEP}{self.adapter}" if self.adapter else self.model


def parse_model_spec(text: str, adapter: str | None = None) -> ModelSpec:
    """`model` or `model::adapter` (an explicit `adapter` argument wins)."""
    model, sep, ad = text.partition(SEP)
    return ModelSpec(model, adapter or (ad if sep and ad else None))


@dataclass
class EvalPlan:
    """Everything to evaluate, already validated."""

    benchmarks: list[Task] = field(default_factory=list)
    datasets: list[TaskData] = field(default_factory=list)
    shots: int = 0
    chat: bool = False
    template: str = "auto"
    batch_size: int = 8
    max_new_tokens: int = 256
    dtype: str = "auto"
    device: str = "auto"
    progress: bool = True
    seed: int = 0

    @property
    def needs_chat_template(self) -> bool:
        return self.chat or bool(self.datasets) or any(t.is_generative for t in self.benchmarks)

    def settings(self) -> dict:
        return {"tasks": [t.name for t in self.benchmarks], "styles": {t.name: t.style for t in self.benchmarks},
                "data": [{"path": d.path, "labels": d.labels, "mode": d.mode if d.labels else "generation",
                          "n": len(d.records)} for d in self.datasets],
                "shots": self.shots, "chat": self.chat, "template": self.template, "batch_size": self.batch_size,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed,
                "limits": {t.name: len(t.items) for t in self.benchmarks}}


def build_plan(tasks: list[str] | None = None, data: list[str] | None = None, *, labels: list[str] | None = None,
               mode: str = "score", limit: int | None = None, source: str = "normalized", style: str | None = None,
               seed: int = 0, **settings) -> EvalPlan:
    """Read and validate every input (no model is touched)."""
    if mode not in ("score", "generate"):
        raise DataError(f"unknown mode '{mode}'", field="mode", hint="use score or generate")
    benchmarks = load_tasks(tasks or [], limit=limit, source=source, style=style, seed=seed)
    datasets = [load_task_data(d, labels, mode, limit, seed) for d in data or []]
    if not benchmarks and not datasets:
        raise DataError("nothing to evaluate", hint="pass --tasks (benchmarks) and/or --data (your task file)")
    return EvalPlan(benchmarks, datasets, seed=seed, **settings)


def load_engine(spec: ModelSpec, plan: EvalPlan):
    """Check the chat template on the tokenizer first (cheap), then load the weights and wrap them in an Engine."""
    from tuneforge.data.templates import ensure_chat_template
    from tuneforge.infer.engine import Engine
    from tuneforge.models.load import load_for_inference, load_tokenizer

    tok_source = spec.adapter if spec.adapter and (Path(spec.adapter) / "tokenizer_config.json").is_file() else None
    if plan.needs_chat_template or plan.template != "auto":
        ensure_chat_template(load_tokenizer(tok_source or spec.model), plan.template)
    model, tok = load_for_inference(spec.model, spec.adapter, dtype=plan.dtype, device=plan.device)
    if plan.needs_chat_template or plan.template != "auto":
        ensure_chat_template(tok, plan.template)
    return Engine(model, tok)


def evaluate(engine, plan: EvalPlan) -> dict[str, dict]:
    """Run every benchmark and dataset of the plan with a loaded Engine; returns task name -> result."""
    from tuneforge.eval.bench import evaluate_generative, evaluate_mc
    from tuneforge.eval.task_eval import classify, evaluate_generation

    out: dict[str, dict] = {}
    for task in plan.benchmarks:
        if task.is_generative:
            out[task.name] = evaluate_generative(task, engine, shots=plan.shots, max_new_tokens=plan.max_new_tokens,
                                                 batch_size=plan.batch_size, progress=plan.progress)
        else:
            out[task.name] = evaluate_mc(task, engine.model, engine.tokenizer, shots=plan.shots, chat=plan.chat,
                                         batch_size=plan.batch_size, progress=plan.progress)
        _say(task.name, out[task.name])
    for d in plan.datasets:
        if d.labels:
            r = classify(engine, None, d.records, d.labels, d.mode, batch_size=plan.batch_size,
                         max_new_tokens=min(plan.max_new_tokens, 32), progress=plan.progress)
        else:
            r = evaluate_generation(engine, d.records, max_new_tokens=plan.max_new_tokens,
                                    batch_size=plan.batch_size, progress=plan.progress)
        r.update(task=d.name, path=d.path, fingerprint=d.fingerprint)
        out[d.name] = r
        _say(d.name, r)
    return out


def _say(name: str, result: dict) -> None:
    from tuneforge.eval.report import headline

    nums = ", ".join(f"{k} {v:.4g}" for k, v in headline(result).items())
    console.print(f"[bold]{name}[/bold]: {nums} ({result['metrics'].get('n')} items, "
                  f"{result['timing']['sec_per_100']} s / 100)")


def default_output(spec: ModelSpec, what: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in what)[:60]
    if spec.adapter:
        return Path(spec.adapter).resolve().parent / "eval" / f"{stamp}-{slug}"
    model_slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(spec.model).name)
    return tuneforge_home() / "eval" / f"{stamp}-{model_slug}-{slug}"


def parent_run(spec: ModelSpec) -> str | None:
    """The registered training run that produced the adapter (or the model folder), for lineage."""
    try:
        from tuneforge.registry.lineage import producing_run
        from tuneforge.registry.store import open_store

        store = open_store()
        return producing_run(store, spec.adapter) or producing_run(store, spec.model)
    except Exception:  # noqa: BLE001 - lineage is informative; the recorder reports a broken registry itself
        return None


def _start_recorder(spec: ModelSpec, plan: EvalPlan, out: Path):
    """A registry RunRecorder (kind "eval", child of the run that trained the model/adapter), or None when the
    registry is not installed."""
    try:
        from tuneforge.models.source import resolve_model
        from tuneforge.registry.api import RunRecorder
    except ImportError:
        return None
    try:
        identity = resolve_model(spec.model).identity
    except Exception:  # noqa: BLE001 - identity is informative only
        identity = spec.model
    datasets = [(d.name, d.fingerprint, len(d.records), "eval") for d in plan.datasets]
    parent = None if RunRecorder.disabled() else parent_run(spec)
    return RunRecorder.start(kind="eval", config={**plan.settings(), "adapter": spec.adapter}, base_model=spec.model,
                             base_model_identity=identity, datasets=datasets, output_dir=str(out), tags=["eval"],
                             parent_run_id=parent)


def run(spec: ModelSpec, plan: EvalPlan, output: str | Path | None = None, *, engine=None) -> tuple[dict, dict]:
    """Evaluate `spec` on `plan`, write the report; returns (results, written paths)."""
    from tuneforge.eval.metrics import scalar_metrics

    names = [t.name for t in plan.benchmarks] + [d.name for d in plan.datasets]
    out = Path(output) if output else default_output(spec, "+".join(names[:3]) or "eval")
    recorder = _start_recorder(spec, plan, out)
    start = time.perf_counter()
    try:
        engine = engine or load_engine(spec, plan)
        tasks = evaluate(engine, plan)
        results = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "model": {"name": spec.model, "adapter": spec.adapter, "label": spec.label},
                   "settings": plan.settings(), "seconds": round(time.perf_counter() - start, 2), "tasks": tasks,
                   "run_id": getattr(recorder, "run_id", None)}
        paths = write_report(results, out)
    except BaseException as err:
        if recorder:
            recorder.finish("interrupted" if isinstance(err, KeyboardInterrupt) else "failed", repr(err)[:500])
        raise
    if recorder:
        for name, r in tasks.items():
            recorder.add_eval(name, scalar_metrics(r["metrics"]))
        recorder.add_artifact("report", str(paths["markdown"]))
        recorder.finish("succeeded")
    console.print(f"report: [bold]{paths['markdown']}[/bold] (also {paths['html'].name}, {paths['json'].name})")
    return results, paths
