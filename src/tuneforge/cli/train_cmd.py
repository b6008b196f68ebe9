"""`tuneforge train CONFIG [key=value ...]`."""

from __future__ import annotations

from typing import Optional

import typer

TRAIN_HELP = """Fine-tune a model as one YAML config describes; dotted key=value arguments override it.

\b
Examples:
  tuneforge train examples/quickstart.yaml
  tuneforge train examples/sft_lora.yaml train.epochs=1 method.r=16 data.packing=true
  tuneforge train examples/dpo.yaml model.name=runs/sft_lora stage.beta=0.2    (DPO after an SFT run)
  torchrun --nproc_per_node 2 -m tuneforge train examples/sft_lora.yaml     (data parallel)

\b
Sections: stage (pt|sft|rm|dpo|simpo|orpo|kto, with its parameters: `tuneforge stages`), model (name: an
alias, folder, .gguf, hub id or an earlier run folder; template, dtype), data (train, eval, dataset_info, val_size,
cutoff_len, mask, packing, on_error), method (type full|freeze|lora, lora.*, freeze.*), train (epochs,
batch_size, learning_rate — each may be 'auto' —, max_steps, save_steps, eval_steps, eval_on_start,
load_best, early_stopping_patience, resume auto|never|force|PATH), output (dir, overwrite, report_to), eval
(preview_prompts, classification). See README "Config tour".

\b
Data is validated before the model loads: a bad row stops the run naming file:line and field
(or is skipped and counted with data.on_error=skip). Ctrl-C saves a checkpoint; the same command resumes
(a changed config is refused unless train.resume=force).
Output: OUTPUT_DIR/{config.yaml, run.json, metrics.jsonl, loss.png, tensorboard/, checkpoints/, adapter|model/}.
"""


def register(app: typer.Typer) -> None:
    @app.command("train", help=TRAIN_HELP)
    def train_cmd(
        config: Optional[str] = typer.Argument(None, help="YAML run config (omit to build one from key=value only)"),
        overrides: Optional[list[str]] = typer.Argument(None, help="dotted overrides, e.g. train.epochs=2"),
    ) -> None:
        from tuneforge.config.load import config_arguments, load_config
        from tuneforge.train.cpu_runtime import keep_freed_memory, reexec_with_allocator

        config, overrides = config_arguments(config, overrides)
        cfg = load_config(config, overrides)
        reexec_with_allocator(cfg.train.allocator)  # restarts this command once, with jemalloc/tcmalloc preloaded
        keep_freed_memory(cfg.train.allocator)  # auto: glibc keeps freed memory for the next step
        from tuneforge.eval.callback import classification_callbacks
        from tuneforge.train.runner import train

        result = train(cfg, config_path=config, eval_callbacks=classification_callbacks)
        if result.status == "interrupted":
            raise typer.Exit(130)
