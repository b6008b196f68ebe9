"""One training run: validate → data → model → method → trainer → fit → save, recorded from start to end.

Data is loaded, validated and rendered before any model weight loads, so a bad row costs seconds, not a run.
SIGINT/SIGTERM save a checkpoint and mark the run interrupted; the same command resumes it (train.resume=auto).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from tuneforge.config.auto import resolve_auto
from tuneforge.config.load import save_config
from tuneforge.data.collate import PadCollator
from tuneforge.methods import apply_method, count_parameters
from tuneforge.models.load import load_model, load_tokenizer, pick_device
from tuneforge.models.source import resolve_model
from tuneforge.stages import get_stage
from tuneforge.train import distributed as dist
from tuneforge.train.callbacks import MetricsCallback, ProgressCallback, StopCallback, TokenCounter
from tuneforge.train.data_prep import PreparedData, prepare_data
from tuneforge.train.output import choose_output_dir, read_run_file, write_run_file
from tuneforge.train.plots import plot_loss
from tuneforge.train.report import print_plan
from tuneforge.train.trainer import ListDataset, TuneforgeTrainer, set_threads_for_cpu, training_arguments
from tuneforge.utils.console import console


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
                             base_model_identity=src.identity, stage=cfg.stage, method=cfg.method.type,
                             datasets=data.datasets, output_dir=str(out), tags=cfg.tags, group_id=group_id,
                             parent_run_id=parent_run_id)


def _extra_callbacks(cfg, data: PreparedData, tok) -> list:
    cls_cfg = cfg.eval.classification
    if cls_cfg is None:
        return []
    from tuneforge.eval.callback import ClassificationEvalCallback

    records = data.val_records
    if cls_cfg.data:
        from tuneforge.data.catalog import DatasetSpec, load_dataset

        records = load_dataset(DatasetSpec(path=cls_cfg.data), on_error=cfg.data.on_error).records
    if not records:
        from tuneforge.utils.errors import ConfigError

        raise ConfigError("eval.classification needs validation rows", hint="set data.val_size or eval.classification.data")
    if cls_cfg.max_samples:
        records = records[: cls_cfg.max_samples]
    return [ClassificationEvalCallback(records, cls_cfg.labels, cls_cfg.mode, every="epoch")]


def _save_final(trainer, tok, out: Path, method: str) -> Path:
    final = out / ("adapter" if method == "lora" else "model")
    trainer.model.config.use_cache = True
    trainer.save_model(str(final))
    tok.save_pretrained(str(final))
    return final


def _run_info(cfg, out, status, started, data, params, resolved, metrics, final=None, error=None,
              run_id=None) -> dict:
    return {"status": status, "run_id": run_id, "pid": os.getpid(), "started": started, "ended": time.time() if status != "running"
            else None, "stage": cfg.stage, "method": cfg.method.type, "base_model": cfg.model.name,
            "data": data.stats, "datasets": data.datasets, "parameters": params, "auto": resolved.chosen,
            "metrics": metrics, "final_dir": str(final) if final else None, "error": error}


def train(cfg, config_path: str | None = None, extra_callbacks: list | None = None, *, group_id: str | None = None,
          parent_run_id: str | None = None) -> TrainResult:
    """Run the configured training to completion (or a clean interruption). See module docstring.

    `group_id` groups runs in the registry (e.g. one data-size sweep); `parent_run_id` records lineage.
    """
    set_threads_for_cpu()
    # transformers/peft call their own deprecated alias internally; users cannot act on this warning.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    stage = get_stage(cfg.stage)
    src = resolve_model(cfg.model.name)
    tok = load_tokenizer(src, revision=cfg.model.revision)
    if stage.needs_chat_template:
        from tuneforge.data.templates import ensure_chat_template

        ensure_chat_template(tok, cfg.model.template)
    data = prepare_data(cfg, tok)
    task_callbacks = _extra_callbacks(cfg, data, tok)  # validated now, before any weight loads
    device = dist.local_device(pick_device(cfg.model.device))
    import torch

    bf16_ok = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    resolved = resolve_auto(cfg.train, cfg.method.type, data.n_train_rows, device, bf16_ok)
    out, resume_ckpt = dist.decide(lambda: choose_output_dir(cfg, config_path))
    main = dist.is_main()
    filled = cfg.model_copy(deep=True)
    filled.train.epochs, filled.train.batch_size = resolved.epochs, resolved.batch_size
    filled.train.learning_rate = resolved.learning_rate
    filled.train.gradient_checkpointing, filled.train.precision = resolved.gradient_checkpointing, resolved.precision
    started = time.time()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(filled, out / "config.yaml")
        print_plan(cfg, data, resolved, device, out, resume_ckpt)

    # Weights load in fp32 unless model.dtype says otherwise; bf16/fp16 precision means mixed-precision autocast.
    model = load_model(src, dtype=cfg.model.dtype if cfg.model.dtype != "auto" else "float32", device=device,
                       revision=cfg.model.revision)
    before = _preview_before(cfg, model, tok) if main and not resume_ckpt else None
    # No KV cache while training: it is useless there, and its presence disables transformers' packed-sequence
    # (block-diagonal) masking derived from position ids. Restored before the final model is saved.
    model.config.use_cache = False
    from transformers import set_seed

    set_seed(cfg.train.seed)
    model = apply_method(model, cfg.method)
    params = count_parameters(model)
    if main:
        console.print(f"[bold]{cfg.method.type}[/bold]: {params}")
    if resume_ckpt and parent_run_id is None:  # a resumed run continues the interrupted one: link them
        parent_run_id = (read_run_file(out) or {}).get("run_id")
    recorder = _start_recorder(cfg, src, data, out, group_id, parent_run_id) if main else None
    info = dict(cfg=cfg, out=out, started=started, data=data, params=params.__dict__, resolved=resolved,
                run_id=recorder.run_id if recorder else None)
    if main:
        write_run_file(out, _run_info(status="running", metrics={}, **info))

    counter = TokenCounter()
    args = training_arguments(filled, resolved, out, device, len(data.train))
    callbacks = [ProgressCallback(counter), MetricsCallback(out, counter, recorder, cfg.output.tensorboard)]
    callbacks += task_callbacks + list(extra_callbacks or [])
    stopper = StopCallback()
    callbacks.append(stopper)
    trainer = TuneforgeTrainer(model=model, args=args, train_dataset=ListDataset(data.train),
                               data_collator=PadCollator(tok.pad_token_id, packed=cfg.data.packing),
                               processing_class=tok, callbacks=callbacks, token_counter=counter)
    for cb in task_callbacks:
        cb.attach(trainer)  # logs through trainer.log → metrics.jsonl, TensorBoard and the registry
    stopper.install()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume_ckpt) if resume_ckpt else None)
    except BaseException as err:
        if main:
            status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
            write_run_file(out, _run_info(status=status, metrics={}, error=repr(err), **info))
            if recorder:
                recorder.finish(status, error=repr(err))
        raise
    finally:
        stopper.uninstall()
    metrics = dict(result.metrics)
    metrics["real_tokens"] = counter.real_tokens * args.world_size
    metrics["padding_fraction"] = round(1 - counter.real_tokens / max(counter.padded_tokens, 1), 4)
    if stopper.requested or trainer.state.global_step < trainer.state.max_steps:
        if main:
            write_run_file(out, _run_info(status="interrupted", metrics=metrics, **info))
            if recorder:
                recorder.finish("interrupted")
            console.print(f"[yellow]interrupted[/yellow]: checkpoint saved in {out / 'checkpoints'}; "
                          f"run the same command again to resume.")
        return TrainResult(out, "interrupted", None, metrics, recorder.run_id if recorder else None)
    return _finish(trainer, tok, cfg, out, metrics, info, recorder, before)


def _preview_before(cfg, model, tok):
    prompts = cfg.eval.preview_prompts
    if not prompts:
        return None
    from tuneforge.train.preview import answer

    console.print(f"[dim]answering {len(prompts)} preview prompts with the base model…[/dim]")
    return answer(model, tok, prompts, cfg.eval.max_new_tokens)


def _finish(trainer, tok, cfg, out, metrics, info, recorder, before) -> TrainResult:
    main = dist.is_main()
    final = _save_final(trainer, tok, out, cfg.method.type) if main else None
    dist.barrier()
    if not main:
        return TrainResult(out, "succeeded", None, metrics)
    png = plot_loss(out / "metrics.jsonl", out / "loss.png", title=f"{cfg.stage}/{cfg.method.type} — {out.name}")
    if before is not None:
        from tuneforge.train.preview import answer, show_and_save

        after = answer(trainer.model, tok, cfg.eval.preview_prompts, cfg.eval.max_new_tokens)
        show_and_save(cfg.eval.preview_prompts, before, after, out)
    write_run_file(out, _run_info(status="succeeded", metrics=metrics, final=final, **info))
    if recorder:
        recorder.add_artifact("adapter" if cfg.method.type == "lora" else "model", str(final))
        if png:
            recorder.add_artifact("plot", str(png))
        recorder.finish("succeeded")
    console.print(f"[bold green]done[/bold green]: {'adapter' if cfg.method.type == 'lora' else 'model'} saved to "
                  f"[bold]{final}[/bold]; loss curve {png}; metrics {out / 'metrics.jsonl'}")
    return TrainResult(out, "succeeded", final, metrics, recorder.run_id if recorder else None)
