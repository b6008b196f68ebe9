"""`tuneforge data preview`: render the configured data exactly as the configured stage will (chat template, loss
mask, truncation, EOS; both sides of a pair) and summarise token lengths. Loads only the tokenizer."""

from __future__ import annotations

from tuneforge.data.preview import length_stats
from tuneforge.data.render import IGNORE
from tuneforge.data.run_records import load_train_records
from tuneforge.models.load import load_tokenizer
from tuneforge.stages import stage_and_params


def preview(cfg, n: int = 3):
    """→ (first n rendered samples, stats dict, tokenizer). A pair shows as two samples (chosen, then rejected)."""
    stage, params = stage_and_params(cfg)
    template = cfg.model.template if stage.needs_chat_template else None
    tok = load_tokenizer(cfg.model.name, revision=cfg.model.revision, template=template)
    records, _, summaries, skipped = load_train_records(cfg, prompts=stage.trains_on_prompts)
    stage.check_records(records)
    d = cfg.data
    rendered, rstats = stage.render_for_preview(records, tok, d, params)
    lengths = [len(r.input_ids) for r in rendered]
    trained = [sum(1 for lab in r.labels if lab != IGNORE) for r in rendered]
    stats = {"datasets": summaries, "skipped_rows": len(skipped), "render": rstats,
             "tokens": length_stats(lengths, d.cutoff_len), "trained_tokens": length_stats(trained, 10**9)}
    return rendered[:n], stats, tok
