"""Evaluate one finished sweep run from disk: eval loss on the eval rows, plus classification metrics when labels
are given (`tuneforge.eval.task_eval.classify`, the same code as `tuneforge eval task`).

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
    from tuneforge.models.load import load_for_inference

    if not Path(final_dir).is_dir():
        raise ModelError(f"the finished run has no {Path(final_dir).name} folder at {final_dir}",
                         hint="delete the size's folder so the sweep trains it again")
    dtype = cfg.model.dtype
    if cfg.method.type == "lora":
        model, tok = load_for_inference(cfg.model.name, adapter=str(final_dir), dtype=dtype, device=cfg.model.device)
        model = model.merge_and_unload()  # same numbers, no per-layer adapter matmuls while evaluating
    else:
        model, tok = load_for_inference(str(final_dir), dtype=dtype, device=cfg.model.device)
    if cfg.stage != "pt" and not tok.chat_template:
        ensure_chat_template(tok, cfg.model.template)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return model, tok


def eval_loss(model, tok, records, *, stage: str, mask: str, cutoff: int, batch_size: int = 8,
              progress: bool = False) -> dict:
    """Mean cross-entropy per trained token (the tokens training puts loss on), rendered exactly as training does."""
    import torch
    import torch.nn.functional as F

    from tuneforge.data.collate import PadCollator
    from tuneforge.data.render import IGNORE, render_records
    from tuneforge.eval.progress import progress_bar

    examples, stats = render_records(records, tok, stage=stage, mask=mask, cutoff=cutoff)
    collate = PadCollator(tok.pad_token_id if tok.pad_token_id is not None else 0)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad(), progress_bar(len(examples), "eval loss", progress) as advance:
        for i in range(0, len(examples), batch_size):
            batch = collate([{"input_ids": e.input_ids, "labels": e.labels} for e in examples[i:i + batch_size]])
            ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
            logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits
            target = labels[:, 1:]
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                   ignore_index=IGNORE, reduction="sum")
            total += float(loss)
            count += int((target != IGNORE).sum())
            advance(len(batch["input_ids"]))
    return {"eval_loss": total / count if count else float("nan"), "eval_tokens": count,
            "eval_rows_dropped": stats.dropped_no_target}


def evaluate(cfg, final_dir: Path, eval_set, *, batch_size: int = 8,
             progress: bool = True) -> tuple[dict, dict | None]:
    """(scalar metrics, full classification result or None) of one finished run."""
    start = time.perf_counter()
    model, tok = load_trained(cfg, final_dir)
    model.eval()
    d = cfg.data
    metrics, detail = {}, None
    if eval_set.with_loss:
        metrics = eval_loss(model, tok, eval_set.records, stage=cfg.stage, mask=d.mask, cutoff=d.cutoff_len,
                            batch_size=batch_size, progress=progress)
    if eval_set.labels:
        from tuneforge.eval.task_eval import classify

        detail = classify(model, tok, eval_set.records, eval_set.labels, eval_set.mode, batch_size=batch_size,
                          progress=progress)
        m = detail["metrics"]
        metrics.update({k: m[k] for k in ("accuracy", "accuracy_stderr", "macro_precision", "macro_recall",
                                          "macro_f1", "n_unparseable")})
    metrics["eval_rows"] = len(eval_set.records)
    metrics["eval_seconds"] = round(time.perf_counter() - start, 2)
    return metrics, detail
