"""Helpers for short real training runs on the 656K TinyStories model."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

from tuneforge.config.load import load_config

STORY_QA = [
    ("Tell me about the dog.", "The dog was happy. He ran in the park with his ball."),
    ("What did Lily find?", "Lily found a shiny red box under the big tree."),
    ("Who is Tom?", "Tom is a little boy who loves to play with his toy car."),
    ("Where did the cat go?", "The cat went to the garden to look for the bird."),
    ("What is the sun like?", "The sun was big and warm, and it made everyone smile."),
    ("What did Mom say?", "Mom said, \"Be careful and have fun outside!\""),
    ("Why was Ben sad?", "Ben was sad because his kite was stuck in the tree."),
    ("What did the bird sing?", "The bird sang a sweet song every morning."),
]


def write_story_data(path: Path, n_repeat: int = 2) -> Path:
    rows = [{"instruction": q, "output": a} for q, a in STORY_QA] * n_repeat
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def tiny_config(tmp_path: Path, model_dir: Path, *overrides: str, data: Path | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = data or write_story_data(tmp_path / "stories.jsonl")
    base = [f"model.name={model_dir}", "model.template=chatml", f"data.train={data}", "data.cutoff_len=64",
            f"output.dir={tmp_path / 'run'}", "output.tensorboard=false", "train.batch_size=4",
            "train.learning_rate=5e-3", "train.epochs=2", "train.warmup_ratio=0", "train.logging_steps=1"]
    if not any(o.startswith(("method.type=", "method=")) for o in overrides):  # LoRA r4 unless a method is given
        base += ["method.type=lora", "method.r=4"]
    return load_config(None, base + list(overrides))


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


class StopAt(TrainerCallback):
    """Does exactly what the SIGINT handler does (save a checkpoint, then stop), at a chosen step."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True


def train_sky_adapter(model_dir: Path, out: Path, steps: int):
    """A LoRA adapter (r 8, all linear layers) trained `steps` full-batch steps with plain PEFT on one chatml
    conversation ("What color is the sky?" → "Blue."), saved in `out` with its chatml tokenizer as a run saves
    it. Returns the trained PeftModel."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tuneforge.data.templates import ensure_chat_template
    from tuneforge.models.load import load_model, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(str(model_dir))
    ensure_chat_template(tok, "chatml")
    model = get_peft_model(load_model(str(model_dir), device="cpu"),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0))
    conv = [{"role": "user", "content": "What color is the sky?"}, {"role": "assistant", "content": "Blue."}]
    ids = torch.tensor([tok.apply_chat_template(conv)["input_ids"]])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return model
