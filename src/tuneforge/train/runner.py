"""One training run: validate → data → model → method → trainer → fit → save, recorded from start to end.

Data is loaded, validated and rendered before any model weight loads, so a bad row costs seconds, not a run.
SIGINT/SIGTERM save a checkpoint and mark the run interrupted; the same command resumes it (train.resume=auto).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuneforge.config import compat
from tuneforge.config.auto import Schedule, resolve_auto, resolve_schedule
from tuneforge.config.load import save_config
from tuneforge.config.schema import MethodSection, check_load_best, streaming_problems
from tuneforge.methods import count_parameters, method_and_params, method_section
from tuneforge.models.load import pick_device, resolve_load_dtype
from tuneforge.models.memory import model_size
from tuneforge.stages import stage_and_params
from tuneforge.stages.compat import check_stage_compat
from tuneforge.train import distributed as dist
from tuneforge.train.callbacks import MetricsCallback, ProgressCallback, StopCallback, TokenCounter, drop_rows_after
from tuneforge.train.cpu_runtime import (check_lora_kernel, lora_kernel, runtime_info, use_attention,
                                        use_lora_kernel)
from tuneforge.train.data_prep import PreparedData, load_run_data
from tuneforge.train.output import (check_resume_config, checkpoint_step, choose_output_dir, read_run_file,
                                    write_run_file)
from tuneforge.train.plots import plot_loss
from tuneforge.train.report import print_plan
from tuneforge.train.trainer import keep_later_within_noise, set_threads_for_cpu, training_arguments
from tuneforge.utils.console import console
from tuneforge.utils.errors import ConfigError


# Rows assumed for the auto rules when a stream's row count is unknown (a hub dataset): more than any rule caps at.
_UNKNOWN_ROWS = 10**9

# Forward-only evaluation per token, as a share of a training step's forward + backward (measured on CPU with
# SmolLM2 and LoRA: 0.115 s per validation row against 0.30 s per training row).
_FORWARD_SHARE = 0.4


@dataclass
class TrainResult:
    output_dir: Path
    status: str  # succeeded | interrupted
    final_dir: Path | None
    metrics: dict
    run_id: str | None = None


def _start_recorder(cfg, src, data: PreparedData, out: Path, group_id=None, parent_run_id=None):
    from tuneforge.registry.api import RunRecorder

    return RunRecorder.start(kind="train", config=cfg.model_dump(mode="json"), base_model=cfg.model.name,
                             base_model_identity=src.identity, stage=cfg.stage.type, method=cfg.method.type,
                             datasets=data.datasets, output_dir=str(out), tags=cfg.tags, group_id=group_id,
                             parent_run_id=parent_run_id)


def _save_final(trainer, tok, out: Path, method, write_tokenizer: bool = True) -> Path:
    final = out / method.artifact
    trainer.model.config.use_cache = True
    method.save(trainer, final)
    if write_tokenizer:
        tok.save_pretrained(str(final))
    return final


def _run_info(cfg, out, status, started, data, params, resolved, metrics, final=None, error=None,
              run_id=None, best=None, kernels=None) -> dict:
    ended = time.time() if status != "running" else None
    return {"status": status, "run_id": run_id, "pid": os.getpid(), "started": started, "ended": ended,
            "stage": cfg.stage.type, "method": cfg.method.type, "base_model": cfg.model.name,
            "distributed": {"mode": compat.distributed_mode(cfg, dist.world_size()), "processes": dist.world_size()},
            "data": data.stats, "datasets": data.datasets, "parameters": params, "auto": resolved.chosen,
            "metrics": metrics, "best": best, "final_dir": str(final) if final else None, "error": error,
            "runtime": runtime_info(cfg, kernels)}


@dataclass
class _Run:
    """What the stages of one recorded run share."""

    cfg: object
    filled: object  # cfg with auto values filled in (saved as config.yaml)
    resolved: object
    schedule: Schedule
    data: PreparedData
    tok: object
    device: str
    out: Path
    resume_ckpt: Path | None
    recorder: object
    info: dict
    before: list | None
    stage: object  # tuneforge.stages.Stage
    stage_params: object  # its validated parameters
    method: object  # tuneforge.methods.Method
    method_params: object  # its validated parameters


def train(cfg, config_path: str | None = None, extra_callbacks: list | None = None, *,
          eval_callbacks: Callable | None = None, group_id: str | None = None,
          parent_run_id: str | None = None) -> TrainResult:
    """Run the configured training to completion (or a clean interruption). See module docstring.

    `extra_callbacks` are added to the Trainer as they are. `eval_callbacks(cfg, val_records, every)` builds the
    callbacks of eval.classification (the CLI passes tuneforge.eval.callback.classification_callbacks); it is
    required when eval.classification is set. `group_id` groups runs in the registry (e.g. one data-size sweep);
    `parent_run_id` records lineage.
    """
    set_threads_for_cpu(cfg.train.threads)
    # transformers/peft call their own deprecated alias internally; users cannot act on this warning.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    device = dist.local_device(pick_device(cfg.model.device))
    stage, stage_params, method, method_params = _check_config(cfg, device)
    src, tok, data = load_run_data(cfg, stage, stage_params)
    import torch

    bf16_ok = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    resolved = resolve_auto(cfg.train, method, data.n_train_rows or _UNKNOWN_ROWS, device, bf16_ok,
                            lr_scale=stage.lr_scale, answer_tokens=_answer_tokens(data) if stage.packable else None,
                            model_params=model_size(cfg.model.name))
    if cfg.data.streaming:
        _streamed_auto(cfg, data, resolved, device)
    stage.check_plan(cfg, stage_params, resolved.batch_size, dist.world_size())
    task_callbacks = _task_callbacks(cfg, data, eval_callbacks)  # validated now, before weights load
    scored_rows = sum(len(getattr(cb, "records", ())) for cb in task_callbacks)
    steps_per_epoch, total_steps = _steps(cfg, data, resolved, stage, stage_params)
    tokens_per_step = resolved.batch_size * cfg.train.grad_accum * dist.world_size() * cfg.data.cutoff_len \
        if cfg.data.streaming else None
    schedule = _schedule(cfg, data, steps_per_epoch, total_steps, stage, scored_rows, tokens_per_step)
    resolved.chosen.update(schedule.chosen)
    filled = _filled_config(cfg, resolved, schedule, method_section(method, method_params))
    out, resume_ckpt = dist.decide(lambda: _output_folder(cfg, filled, data, config_path))
    main = dist.is_main()
    started = time.time()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(filled, out / "config.yaml")
        print_plan(cfg, data, resolved, device, out, resume_ckpt, schedule)

    # Base weights: float32 on CPU/MPS and for methods that train them; a frozen adapter base in bf16/fp16 on CUDA
    # (QLoRA: quantized as it loads, computing in that dtype).
    dtype = resolve_load_dtype(cfg.model.dtype, method.frozen_base, device, bf16_ok, precision=resolved.precision)
    model = stage.load_model(src, dtype=dtype, device=device, revision=cfg.model.revision, tok=tok,
                             **method.load_kwargs(method_params, compute_dtype=dtype))
    kernels = {"attention": use_attention(model, cfg.train.attention, cfg.data.packing, device)}
    before = _preview_before(cfg, model, tok) if main and not resume_ckpt else None
    # No KV cache while training: it is useless there, and its presence disables transformers' packed-sequence
    # (block-diagonal) masking derived from position ids. Restored before the final model is saved.
    model.config.use_cache = False
    from transformers import set_seed

    set_seed(cfg.train.seed)
    model = method.apply(model, method_params, total_steps=total_steps, tok=tok)
    kernels["lora"] = use_lora_kernel(model, lora_kernel(cfg.train.lora_kernel,
                                                         compat.distributed_mode(cfg, dist.world_size())))
    params = count_parameters(model)
    if main:
        fused = " · LoRA layers fused (train.lora_kernel)" if kernels["lora"] == "fused" else ""
        console.print(f"[bold]{method.name}[/bold]: {params}{fused}")
    if resume_ckpt and parent_run_id is None:  # a resumed run continues the interrupted one: link them
        parent_run_id = (read_run_file(out) or {}).get("run_id")
    if src.run_dir and parent_run_id is None:  # model.name is an earlier run (sft → dpo): it is the parent
        parent_run_id = (read_run_file(Path(src.run_dir)) or {}).get("run_id")
    recorder = _start_recorder(cfg, src, data, out, group_id, parent_run_id) if main else None
    info = dict(cfg=cfg, out=out, started=started, data=data, params=params.__dict__, resolved=resolved,
                run_id=recorder.run_id if recorder else None, kernels=kernels)
    if main:
        write_run_file(out, _run_info(status="running", metrics={}, **info))
    run = _Run(cfg, filled, resolved, schedule, data, tok, device, out, resume_ckpt, recorder, info, before, stage,
               stage_params, method, method_params)
    try:  # from here on the run is recorded: any failure marks it failed (or interrupted) in run.json + registry
        return _fit(run, model, task_callbacks + list(extra_callbacks or []))
    except BaseException as err:
        if main:
            status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
            write_run_file(out, _run_info(status=status, metrics={}, error=repr(err), **info))
            if recorder:
                recorder.finish(status, error=repr(err))
        raise


def _check_config(cfg, device: str):
    """Checks that span sections, the stage's and the method's own, and the compatibility table (configs built in
    code are checked here too); trackers installed. Returns the stage and the method with their validated
    parameters."""
    stage, params = stage_and_params(cfg)
    method, method_params = method_and_params(cfg)
    try:
        check_load_best(cfg, metrics=stage.metrics)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    check_stage_compat(cfg, stage)
    problems = streaming_problems(cfg)
    if problems:
        raise ConfigError("; ".join(p for p, _ in problems), hint="; ".join(f for _, f in problems))
    compat.check(cfg, device=device, world_size=dist.world_size())
    check_lora_kernel(cfg.train.lora_kernel, compat.distributed_mode(cfg, dist.world_size()))
    import importlib.util

    needs = method.requires + (("bitsandbytes",) if cfg.train.optim == "adamw_8bit" else ())
    absent = [p for p in needs if importlib.util.find_spec(p) is None]
    if cfg.train.kernels == "liger" and importlib.util.find_spec("liger_kernel") is None:
        raise ConfigError("train.kernels=liger needs the liger-kernel package, which is not installed",
                          hint="pip install liger-kernel (or tuneforge[liger]; it needs Triton and a CUDA GPU), or set "
                               "train.kernels=none")
    if absent:
        raise ConfigError(f"method {method.name} / train.optim={cfg.train.optim} needs {', '.join(absent)}, which "
                          f"is not installed", hint=f"pip install {' '.join(absent).replace('_', '-')} (bash "
                                                    f"install.sh installs it)")
    missing = [t for t in cfg.output.report_to if importlib.util.find_spec(t) is None]
    if missing:
        raise ConfigError(f"output.report_to names {', '.join(missing)}, which is not installed",
                          hint=f"pip install {' '.join(missing)}, or remove it from output.report_to")
    return stage, params, method, method_params


def _task_callbacks(cfg, data: PreparedData, eval_callbacks) -> list:
    if cfg.eval.classification is None:
        return []
    if eval_callbacks is None:
        raise ConfigError("eval.classification is set, but train() was given no eval_callbacks to compute it",
                          hint="pass eval_callbacks=tuneforge.eval.callback.classification_callbacks "
                               "(the tuneforge CLI does), or set eval.classification=null")
    steps = cfg.train.eval_steps if cfg.train.eval_steps != "auto" else 0  # without validation auto means 0
    every = "evaluate" if data.val else (steps or "epoch")
    return list(eval_callbacks(cfg, data.val_records, every))


def _answer_tokens(data: PreparedData) -> float | None:
    """Trained tokens per training example (asked of single-sequence stages only: pt, sft)."""
    train = data.stats.get("train") or {}
    if not train.get("trained_tokens") or not train.get("kept"):
        return None
    return train["trained_tokens"] / train["kept"]


def _streamed_auto(cfg, data: PreparedData, resolved, device: str) -> None:
    """A streamed run has no epochs (train.max_steps ends it; the stream repeats the data as often as needed), and
    the batch-size rule sees the checked row count, or none for hub data."""
    resolved.epochs = 1.0
    resolved.chosen.pop("epochs", None)
    if data.n_train_rows is None and "batch_size" in resolved.chosen:
        resolved.chosen["batch_size"] = (f"{resolved.batch_size} (streamed hub data, rows unknown: the largest auto "
                                         f"batch size on {device})")


def _steps(cfg, data: PreparedData, resolved, stage, params) -> tuple[int, int]:
    """(optimizer steps per epoch, optimizer steps in the run). A streamed run is one "epoch" of train.max_steps
    steps, as the HF Trainer counts an unsized dataset."""
    if cfg.data.streaming:
        return cfg.train.max_steps, cfg.train.max_steps
    per_step = resolved.batch_size * cfg.train.grad_accum * dist.world_size()
    steps_per_epoch = math.ceil(len(data.train) * stage.sequences_per_item(params) / per_step)
    total = cfg.train.max_steps if cfg.train.max_steps > 0 else math.ceil(resolved.epochs * steps_per_epoch)
    return steps_per_epoch, total


def _schedule(cfg, data: PreparedData, steps_per_epoch: int, total: int, stage, scored_rows: int,
              tokens_per_step: int | None = None) -> Schedule:
    return resolve_schedule(cfg.train, has_validation=bool(data.val),
                            has_classification=cfg.eval.classification is not None,
                            steps_per_epoch=steps_per_epoch, total_steps=total, auto_metric=stage.auto_metric,
                            eval_cost_steps=_eval_cost_steps(data, steps_per_epoch, scored_rows, tokens_per_step),
                            scored_rows=scored_rows)


def _eval_cost_steps(data: PreparedData, steps_per_epoch: int, scored_rows: int,
                     tokens_per_step: int | None = None) -> float:
    """One evaluation's compute in training steps: the validation tokens plus the rows eval.classification scores
    (at the validation rows' mean length), at _FORWARD_SHARE of a training step's cost per token.
    `tokens_per_step`: a streamed run's (full blocks), whose training tokens are not counted ahead."""
    val = (data.stats.get("val") or {}).get("tokens", 0)
    val += scored_rows * val / max(len(data.val), 1)
    train_per_step = tokens_per_step or data.stats["train"]["tokens"] / max(steps_per_epoch, 1)
    return val * _FORWARD_SHARE / max(train_per_step, 1)


def _filled_config(cfg, resolved, schedule: Schedule, method: dict):
    filled = cfg.model_copy(deep=True)
    filled.method = MethodSection(**method)
    filled.train.eval_steps, filled.train.load_best = schedule.eval_steps, schedule.load_best
    filled.train.early_stopping_patience = schedule.patience
    filled.train.early_stopping_threshold = schedule.threshold
    filled.train.epochs, filled.train.batch_size = resolved.epochs, resolved.batch_size
    filled.train.learning_rate = resolved.learning_rate
    filled.train.learning_rate_multiplier = 1.0  # already in learning_rate
    filled.train.gradient_checkpointing, filled.train.precision = resolved.gradient_checkpointing, resolved.precision
    return filled


def _output_folder(cfg, filled, data: PreparedData, config_path):
    out, resume_ckpt = choose_output_dir(cfg, config_path)
    if resume_ckpt is not None and cfg.train.resume in ("auto", "force"):
        check_resume_config(out, resume_ckpt, filled.model_dump(mode="json"), cfg.train.resume, data.datasets)
    return out, resume_ckpt


def _build_trainer(run: _Run, model, callbacks: list):
    counter = TokenCounter()
    if run.resume_ckpt is not None:
        counter.load(run.resume_ckpt)  # token counts continue where the checkpoint left them
        if dist.is_main():
            drop_rows_after(run.out / "metrics.jsonl", checkpoint_step(run.resume_ckpt))
    cfg, tok = run.cfg, run.tok
    n_items = 0 if cfg.data.streaming else len(run.data.train)  # a stream is unsized
    args = training_arguments(run.filled, run.resolved, run.out, run.device, n_items, run.schedule)
    callbacks = [ProgressCallback(counter), MetricsCallback(run.out, counter, run.recorder), *callbacks,
                 *run.method.callbacks(run.method_params)]
    if run.schedule.patience:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(run.schedule.patience, run.schedule.threshold))
    stopper = StopCallback()
    callbacks.append(stopper)
    trainer = run.stage.build(model=model, tok=tok, train_items=run.data.train,
                              val_items=run.data.val if run.schedule.evaluate else [], args=args,
                              callbacks=callbacks, counter=counter, params=run.stage_params, data_cfg=cfg.data,
                              out_dir=run.out)
    if run.schedule.load_best:
        keep_later_within_noise(trainer, run.schedule.threshold)
    optimizer = run.method.optimizer(trainer.model, args, run.method_params)
    if optimizer is not None:  # the Trainer builds its own only when none is set
        trainer.optimizer = optimizer
    for cb in callbacks:
        if hasattr(cb, "attach"):
            cb.attach(trainer)  # logs through trainer.log → metrics.jsonl, trackers and the registry
    for cb in trainer.callback_handler.callbacks:
        if type(cb).__name__ == "TensorBoardCallback":
            cb.logging_dir = str(run.out / "tensorboard")
    return trainer, counter, stopper


def _fit(run: _Run, model, callbacks: list) -> TrainResult:
    trainer, counter, stopper = _build_trainer(run, model, callbacks)
    stopper.install()
    try:
        result = trainer.train(resume_from_checkpoint=str(run.resume_ckpt) if run.resume_ckpt else None)
    finally:
        stopper.uninstall()
    metrics = dict(result.metrics)
    metrics["real_tokens"] = counter.real_tokens * trainer.args.world_size
    metrics["padding_fraction"] = round(1 - counter.real_tokens / max(counter.padded_tokens, 1), 4)
    if stopper.requested or (trainer.state.global_step < trainer.state.max_steps and not _stopped_early(trainer)):
        if dist.is_main():
            write_run_file(run.out, _run_info(status="interrupted", metrics=metrics, **run.info))
            if run.recorder:
                run.recorder.finish("interrupted")
            console.print(f"[yellow]interrupted[/yellow]: checkpoint saved in {run.out / 'checkpoints'}; "
                          f"run the same command again to resume.")
        dist.barrier()  # no rank exits before rank 0 has written the status (torchrun kills the others on exit)
        return TrainResult(run.out, "interrupted", None, metrics, run.recorder.run_id if run.recorder else None)
    metrics.update(_final_eval(trainer, run.schedule, run.stage.metrics))
    return _finish(trainer, run, metrics)


def _preview_before(cfg, model, tok):
    prompts = cfg.eval.preview_prompts
    if not prompts:
        return None
    from tuneforge.train.preview import answer

    console.print(f"[dim]answering {len(prompts)} preview prompts with the base model…[/dim]")
    return answer(model, tok, prompts, cfg.eval.max_new_tokens)


def _stopped_early(trainer) -> bool:
    """True when train.early_stopping_patience ended the run (not an interruption)."""
    return any(getattr(cb, "early_stopping_patience_counter", 0) >= getattr(cb, "early_stopping_patience", 1 << 30)
               for cb in trainer.callback_handler.callbacks)


def _eval_logs_at(history: list[dict], step: int) -> dict:
    found: dict = {}
    for row in history:
        if row.get("step") == step:
            found.update({k: v for k, v in row.items() if k.startswith("eval_")})
    return found


def _final_eval(trainer, schedule: Schedule, metrics: tuple[str, ...]) -> dict:
    """Evaluation metrics of the final artifact: the best step's (train.load_best), else the last step's, measured
    now when the last evaluation happened before the last step."""
    if not schedule.evaluate:
        return {}
    st = trainer.state
    step = st.best_global_step if schedule.load_best and st.best_model_checkpoint else st.global_step
    found = _eval_logs_at(st.log_history, step)
    if not any(m in found for m in metrics):  # the stage's own metrics (eval_loss, eval_reward, ...)
        found.update(trainer.evaluate())  # all ranks evaluate together
    return {k: v for k, v in found.items() if not k.endswith(("_runtime", "_per_second"))}


def _best_info(trainer, schedule: Schedule) -> dict | None:
    st = trainer.state
    if not schedule.load_best:
        return None
    step = st.best_global_step if st.best_model_checkpoint else None
    value = _eval_logs_at(st.log_history, step).get(schedule.load_best, st.best_metric) if step else st.best_metric
    return {"metric": schedule.load_best, "greater_is_better": schedule.greater_is_better, "step": step,
            "value": value, "best_seen": st.best_metric, "checkpoint": st.best_model_checkpoint}


def _finish(trainer, run: _Run, metrics: dict) -> TrainResult:
    cfg, out, recorder, tok = run.cfg, run.out, run.recorder, run.tok
    main = dist.is_main()
    # a sharded model (fsdp, deepspeed) is gathered by every rank together; only rank 0 writes
    gathered = run.cfg.train.distributed in ("fsdp", "deepspeed")
    final = _save_final(trainer, tok, out, run.method, write_tokenizer=main) if main or gathered else None
    final = final if main else None
    dist.barrier()
    if not main:
        return TrainResult(out, "succeeded", None, metrics)
    png = plot_loss(out / "metrics.jsonl", out / "loss.png", title=f"{cfg.stage.type}/{cfg.method.type} — {out.name}")
    if run.before is not None:
        from tuneforge.train.preview import answer, show_and_save

        after = answer(trainer.model, tok, cfg.eval.preview_prompts, cfg.eval.max_new_tokens)
        show_and_save(cfg.eval.preview_prompts, run.before, after, out)
    best = _best_info(trainer, run.schedule)
    write_run_file(out, _run_info(status="succeeded", metrics=metrics, final=final, best=best, **run.info))
    if recorder:
        recorder.add_artifact(run.method.artifact, str(final))
        if png:
            recorder.add_artifact("plot", str(png))
        recorder.finish("succeeded")
    kept = f" (best {best['metric']} {best['value']:.4f} at step {best['step']})" if best and best["step"] else ""
    console.print(f"[bold green]done[/bold green]: {run.method.artifact} saved to "
                  f"[bold]{final}[/bold]{kept}; loss curve {png}; metrics {out / 'metrics.jsonl'}")
    return TrainResult(out, "succeeded", final, metrics, recorder.run_id if recorder else None)
