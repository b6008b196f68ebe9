"""The run's output folder: naming, never overwriting a user's files, and finding a checkpoint to resume.

Layout: config.yaml (resolved), run.json (status + data stats + choices), metrics.jsonl, tensorboard/,
checkpoints/checkpoint-N/, adapter/ (LoRA) or model/ (full, freeze) with tokenizer and chat template, loss.png,
preview.json (answers before/after).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tuneforge.utils.errors import ConfigError

RUN_FILE = "run.json"


def default_run_name(cfg, config_path: str | None) -> str:
    if cfg.output.run_name:
        return cfg.output.run_name
    if config_path:
        return Path(config_path).stem
    return f"{cfg.stage}-{cfg.method.type}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_run_file(out: Path) -> dict | None:
    p = out / RUN_FILE
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except json.JSONDecodeError:
        return None


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = [p for p in (out / "checkpoints").glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    complete = [p for p in ckpts if (p / "trainer_state.json").is_file()]
    return max(complete, key=lambda p: int(p.name.split("-")[1]), default=None)


def choose_output_dir(cfg, config_path: str | None) -> tuple[Path, Path | None]:
    """Return (output folder, checkpoint to resume from or None), refusing to clobber anything.

    - empty or missing folder: a fresh run;
    - a tuneforge run that did not finish: resume from its newest checkpoint (train.resume=auto);
    - a finished run: with the default `runs/{run_name}` a numbered sibling is used (runs/name-2); an explicit
      folder is an error unless output.overwrite is set;
    - any other non-empty folder: an error unless output.overwrite is set.
    """
    name = default_run_name(cfg, config_path)
    templated = "{run_name}" in cfg.output.dir
    out = Path(cfg.output.dir.format(run_name=name))
    explicit_ckpt = cfg.train.resume not in ("auto", "never")
    if explicit_ckpt:
        ck = Path(cfg.train.resume)
        if not (ck / "trainer_state.json").is_file():
            raise ConfigError(f"train.resume={ck} is not a checkpoint folder (no trainer_state.json)")
        return out, ck
    n = 1
    while True:
        candidate = out if n == 1 else out.with_name(f"{out.name}-{n}")
        decision = _inspect(candidate, cfg)
        if decision == "fresh":
            return candidate, None
        if decision == "resume":
            return candidate, latest_checkpoint(candidate) if cfg.train.resume == "auto" else None
        if not templated or decision == "foreign":
            raise ConfigError(f"output folder {candidate} is not empty "
                              f"({'a finished run' if decision == 'finished' else 'not a tuneforge run'})",
                              hint="choose another output.dir, or set output.overwrite=true to write into it")
        n += 1


def _inspect(out: Path, cfg) -> str:
    if not out.exists() or not any(out.iterdir()):
        return "fresh"
    if cfg.output.overwrite:
        return "fresh"
    info = read_run_file(out)
    if info is None:
        return "foreign"
    if info.get("status") == "succeeded":
        return "finished"
    return "resume"


def write_run_file(out: Path, info: dict) -> None:
    tmp = out / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, default=str))
    tmp.replace(out / RUN_FILE)
