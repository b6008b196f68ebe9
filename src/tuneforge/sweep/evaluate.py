"""Evaluate one finished sweep run from disk: classification metrics when labels are given
(`tuneforge.eval.task_eval.classify`, the same code as `tuneforge eval task`). The eval loss is the training run's
own (the trainer evaluates the sweep's eval rows, given to each run as data.eval), so there is one implementation.

The run's saved model is reloaded (base + LoRA adapter, or the full/freeze model folder) rather than reusing the
training process's weights, so an interrupted sweep can evaluate sizes it trained earlier.
"""

from __future__ import annotations

import time
from pathlib import Path

from tuneforge.utils.errors import ModelError


def load_trained(cfg, final_dir: Path):
    """(model, tokenizer) of a finished run: `final_dir` is OUTPUT/adapter (LoRA) or OUTPUT/model."""
    from tuneforge.data.templates import ensure_chat_template
    from tuneforge.methods import get_method
    from tuneforge.models.addons import is_adapter_dir
    from tuneforge.models.load import load_for_inference

    if not Path(final_dir).is_dir():
        raise ModelError(f"the finished run has no {Path(final_dir).name} folder at {final_dir}",
                         hint="delete the size's folder so the sweep trains it again")
    dtype = cfg.model.dtype
    if is_adapter_dir(final_dir):
        model, tok = load_for_inference(cfg.model.name, adapter=str(final_dir), dtype=dtype, device=cfg.model.device)
        if get_method(cfg.method).mergeable:
            model = model.merge_and_unload()  # same numbers, no per-layer adapter matmuls while evaluating
    else:
        model, tok = load_for_inference(str(final_dir), dtype=dtype, device=cfg.model.device)
    if cfg.stage.type != "pt" and not tok.chat_template:
        ensure_chat_template(tok, cfg.model.template)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return model, tok


def evaluate(cfg, final_dir: Path, eval_set, *, batch_size: int = 8,
             progress: bool = True) -> tuple[dict, dict | None]:
    """(classification metrics, full classification result) of one finished run; ({}, None) without labels.

    The eval loss is not computed here: each run measures it on the same rows during training (the sweep gives
    them to the run as data.eval) and the sweep reads it from the run's final metrics."""
    if not eval_set.labels:
        return {}, None
    from tuneforge.eval.task_eval import classify

    start = time.perf_counter()
    model, tok = load_trained(cfg, final_dir)
    model.eval()
    detail = classify(model, tok, eval_set.records, eval_set.labels, eval_set.mode, batch_size=batch_size,
                      progress=progress)
    m = detail["metrics"]
    metrics = {k: m[k] for k in ("accuracy", "accuracy_stderr", "macro_precision", "macro_recall", "macro_f1",
                                 "n_unparseable")}
    metrics["eval_seconds"] = round(time.perf_counter() - start, 2)
    return metrics, detail
