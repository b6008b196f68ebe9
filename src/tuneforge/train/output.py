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

import yaml

from tuneforge.utils.errors import ConfigError, TuneforgeError
from tuneforge.utils.io import atomic_write_json

RUN_FILE = "run.json"


def default_run_name(cfg, config_path: str | None) -> str:
    if cfg.output.run_name:
        return cfg.output.run_name
    if config_path:
        return Path(config_path).stem
    return f"{cfg.stage.type}-{cfg.method.type}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_run_file(out: Path) -> dict | None:
    p = out / RUN_FILE
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except json.JSONDecodeError:
        return None


def checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step of a checkpoint folder (its trainer_state.json, else the number in its name)."""
    state = Path(checkpoint) / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text()).get("global_step", 0))
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = [p for p in (out / "checkpoints").glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    complete = [p for p in ckpts if _readable_state(p / "trainer_state.json")]
    return max(complete, key=lambda p: int(p.name.split("-")[1]), default=None)


def _readable_state(path: Path) -> bool:
    """A checkpoint counts only when its trainer_state.json parses: a kill while it was written leaves it truncated."""
    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


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
    explicit_ckpt = cfg.train.resume not in ("auto", "never", "force")
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
            return candidate, latest_checkpoint(candidate) if cfg.train.resume in ("auto", "force") else None
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
    atomic_write_json(out / RUN_FILE, info)


# Keys that may change between an interrupted run and its resume: where and how results are shown or kept, not
# what is trained (output.dir: the folder is the same one, however it was spelled).
RESUME_MAY_DIFFER = ("output.", "tags", "eval.preview_prompts", "eval.max_new_tokens", "train.resume",
                     "train.logging_steps", "train.save_total_limit", "train.num_workers")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) and v else {key: v})
    return out


def config_changes(old: dict, new: dict, defaults: dict | None = None) -> list[tuple[str, object, object]]:
    """(key, old value, new value) for every setting that differs and matters to training. A key the old config
    lacks (saved by an older tuneforge) counts as its default from `defaults`."""
    a, b = {**_flat(defaults or {}), **_flat(old)}, _flat(new)
    keys = [k for k in dict.fromkeys([*a, *b]) if not k.startswith(RESUME_MAY_DIFFER)]
    return [(k, a.get(k, "(not set)"), b.get(k, "(not set)")) for k in keys if a.get(k, "(not set)") !=
            b.get(k, "(not set)")]


def _data_change(out: Path, datasets: list) -> list[tuple[str, object, object]]:
    """The training data's content fingerprints, as recorded in run.json, against this run's."""
    before = [d[1] for d in (read_run_file(out) or {}).get("datasets") or []]
    now = [d[1] for d in datasets]
    if not before or before == now:
        return []
    return [("data (content fingerprint)", ",".join(f[:12] for f in before), ",".join(f[:12] for f in now))]


def _spelled_out(method):
    """A saved `method:` section with every parameter of its method spelled out, as runs save it now."""
    from tuneforge.config.schema import MethodSection
    from tuneforge.methods import method_and_params, method_section

    try:
        return method_section(*method_and_params(MethodSection.model_validate(method or {})))
    except (ValueError, TuneforgeError):
        return method


def check_resume_config(out: Path, checkpoint: Path, new: dict, mode: str, datasets: list = ()) -> None:
    """Refuse to resume an interrupted run with a different resolved config or different data (the old optimizer
    would continue on new settings), unless train.resume=force. Runs saved without config.yaml resume."""
    saved = out / "config.yaml"
    if mode == "force" or not saved.is_file():
        return
    from tuneforge.config.schema import RunConfig

    old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    if isinstance(old.get("stage"), str):  # saved before stages took parameters
        old["stage"] = {"type": old["stage"]}
    old["method"] = _spelled_out(old.get("method"))  # saved before methods were plug-ins: nested sections
    defaults = RunConfig.model_construct().model_dump(mode="json")
    changes = config_changes(old, new, defaults) + _data_change(out, list(datasets))
    if not changes:
        return
    shown = "\n  ".join(f"{k}: {a!r} → {b!r}" for k, a, b in changes)
    raise ConfigError(f"{out} holds an unfinished run with a different config; resuming {checkpoint.name} would "
                      f"continue its optimizer on the new settings. Changed (old → new):\n  {shown}",
                      hint="start a new run with another output.dir, or continue anyway with train.resume=force")
