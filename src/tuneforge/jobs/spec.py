"""A fine-tuning job request (OpenAI's fields) → the tuneforge run config its worker trains, and its model ids.

    method supervised → stage sft;  dpo → stage dpo (beta);  reinforcement → stage grpo (graders as rewards)
    n_epochs, batch_size → train.epochs, train.batch_size ("auto" stays auto: tuneforge resolves it)
    learning_rate_multiplier → train.learning_rate_multiplier (× tuneforge's auto learning rate)
    seed → train.seed;  the method (LoRA by default) and other settings: our extension `tuneforge: {key: value}`

The config is validated when the job is created (a bad setting is the request's 400, not a failed job later).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.utils.errors import ConfigError

# OpenAI's method types, then tuneforge's own (an extension: the stages whose result is a model to chat with; reward
# models and PPO, which needs one, are trained with `tuneforge train`).
METHOD_STAGES = {"supervised": "sft", "dpo": "dpo", "reinforcement": "grpo",
                 "orpo": "orpo", "simpo": "simpo", "kto": "kto", "pretraining": "pt"}
FILE_KINDS = {"supervised": ("chat",), "dpo": ("pairwise",), "reinforcement": ("chat", "prompts"),
              "orpo": ("pairwise",), "simpo": ("pairwise",), "kto": ("kto",), "pretraining": ("text",)}
DEFAULT_METHOD = "lora"
# Settings a job may not change through `tuneforge`: the server decides the base, the data and where runs go.
_FIXED = ("model", "data.train", "data.eval", "output", "train.resume", "train.distributed", "stage.type", "tags")


@dataclass(frozen=True)
class JobInputs:
    """What the server knows beside the request: the base it serves and where the job's files and run live."""

    base_source: str  # resolved path (or hub id) of the served base
    template: str  # the server's chat template for the base
    training_path: str
    validation_path: str | None
    run_dir: str


def hyperparameters(method: dict) -> dict:
    """The method's hyperparameters (OpenAI keeps them under method.<type>.hyperparameters)."""
    return dict(((method.get(method["type"]) or {}).get("hyperparameters")) or {})


def normalize_method(method: dict | None, legacy: dict | None) -> dict:
    """The request's `method`, or the deprecated top-level `hyperparameters` as a supervised method."""
    if method:
        if legacy:
            raise ConfigError("give hyperparameters inside method.<type>.hyperparameters, not also at the top level",
                              hint="the top-level `hyperparameters` is deprecated; use `method`")
        kind = method.get("type")
        if kind not in METHOD_STAGES:
            raise ConfigError(f"method.type must be one of {', '.join(METHOD_STAGES)}, got {kind!r}")
        return {"type": kind, kind: dict(method.get(kind) or {})}
    return {"type": "supervised", "supervised": {"hyperparameters": dict(legacy or {})}}


def _set(data: dict, dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        if isinstance(node.get(part), str):
            node[part] = {"type": node[part]}
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"tuneforge.{dotted}: {'.'.join(parts[:-1])} is not a section")
    node[parts[-1]] = value


def _check_overrides(overrides: dict) -> None:
    for key in overrides:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"tuneforge: keys must be dotted config keys like train.max_steps, got {key!r}")
        if any(key == f or key.startswith(f + ".") for f in _FIXED):
            raise ConfigError(f"tuneforge.{key} is set by the server for every job",
                              hint="the base is the served model, the data are training_file and validation_file")


def _number(value, key: str, kind=float):
    if value in (None, "auto"):
        return "auto"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{key} must be a positive number or \"auto\", got {value!r}")
    if kind is int and int(value) != value:
        raise ConfigError(f"{key} must be a whole number or \"auto\", got {value!r}")
    return kind(value)


def run_config(method: dict, seed: int, overrides: dict | None, inputs: JobInputs,
               rewards: list[dict] | None = None) -> dict:
    """The config (as a dict, validated by the caller) a job trains with."""
    kind = method["type"]
    hp = hyperparameters(method)
    where = f"method.{kind}.hyperparameters"
    train: dict = {"seed": seed, "epochs": _number(hp.get("n_epochs"), f"{where}.n_epochs"),
                   "batch_size": _number(hp.get("batch_size"), f"{where}.batch_size", int)}
    mult = _number(hp.get("learning_rate_multiplier"), f"{where}.learning_rate_multiplier")
    if mult != "auto":
        train["learning_rate_multiplier"] = mult
    stage: dict = {"type": METHOD_STAGES[kind]}
    if kind == "dpo" and hp.get("beta") not in (None, "auto"):
        stage["beta"] = _number(hp["beta"], f"{where}.beta")
    if kind == "reinforcement":
        stage["rewards"] = rewards or []
    data = {"train": [{"path": inputs.training_path}],
            "eval": [{"path": inputs.validation_path}] if inputs.validation_path else []}
    config = {"model": {"name": inputs.base_source, "template": inputs.template}, "data": data, "stage": stage,
              "method": {"type": DEFAULT_METHOD}, "train": {**train, "save_total_limit": 3},
              "output": {"dir": inputs.run_dir, "run_name": Path(inputs.run_dir).parent.name},
              "tags": [f"job:{Path(inputs.run_dir).parent.name}"]}
    overrides = dict(overrides or {})
    _check_overrides(overrides)
    config = copy.deepcopy(config)
    for key, value in overrides.items():
        _set(config, key, value)
    return config


def continuation(config: dict, run_dir: str, checkpoint: str) -> dict:
    """The config of a job that continues an ended job's training from `checkpoint` (a failed or cancelled job that
    left one) in its own run folder: the same settings, its own output folder and tag, and train.resume naming the
    checkpoint. The worker trains from there until the new folder holds a checkpoint of its own (jobs.worker)."""
    new = copy.deepcopy(config)
    job_id = Path(run_dir).parent.name
    new["output"] = {**(new.get("output") or {}), "dir": run_dir, "run_name": job_id}
    new["train"] = {**(new.get("train") or {}), "resume": checkpoint}
    new["tags"] = [t for t in new.get("tags") or [] if not str(t).startswith("job:")] + [f"job:{job_id}"]
    return new


def validate_config(config: dict):
    """The RunConfig, its stage and method checked as the runner checks them (on the device this machine would
    train on), before any data or weights load."""
    from tuneforge.config import compat
    from tuneforge.config.load import validate
    from tuneforge.methods import method_and_params
    from tuneforge.models.load import pick_device
    from tuneforge.stages import stage_and_params
    from tuneforge.stages.compat import check_stage_compat

    cfg = validate(config, "fine-tuning job")
    device = pick_device(cfg.model.device)
    stage, _ = stage_and_params(cfg)
    method_and_params(cfg)
    check_stage_compat(cfg, stage)
    compat.check(cfg, device=device)
    return cfg


def model_name(base_id: str, suffix: str | None, job_id: str) -> str:
    """`ft:<base>:<suffix>:<job>` (suffix may be empty), the id a finished job's model is called by."""
    return f"ft:{base_id}:{suffix or ''}:{job_id.removeprefix('ftjob-')}"


def checkpoint_name(model: str, step: int) -> str:
    return f"{model}:ckpt-step-{step}"
