"""Read a run config: YAML file + dotted `key=value` overrides → validated RunConfig.

Errors name the key and the file, and unknown keys get a "did you mean" suggestion. The fully resolved config is
written to the output folder by the runner (`save_config`).
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tuneforge.config.schema import RunConfig
from tuneforge.utils.errors import ConfigError
from tuneforge.utils.paths import DATA_FILE_SUFFIXES


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.learning_rate=1e-4` → (["train", "learning_rate"], 1e-4). Values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not key=value", hint="e.g. train.epochs=3 method.r=16")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            nxt = node.get(part)
            if isinstance(nxt, str):  # `stage: dpo` then `stage.beta=0.2`: the name becomes {type: dpo}
                nxt = {"type": nxt}
                node[part] = nxt
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[path[-1]] = value
    return data


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the field path `loc` (to list its valid keys)."""
    model: Any = RunConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        ann = field.annotation
        for cand in getattr(ann, "__args__", ()) + (ann,):
            inner = getattr(cand, "__args__", None)
            for c in (inner or ()) + (cand,):
                if isinstance(c, type) and issubclass(c, BaseModel):
                    model = c
                    break
            else:
                continue
            break
        else:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _describe(err: dict, source: str) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        owner = _model_at(loc)
        valid = sorted(owner.model_fields) if owner else []
        guess = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        tip = f" — did you mean '{'.'.join(str(p) for p in loc[:-1] + (guess[0],))}'?" if guess else ""
        return f"{source}: unknown key '{key}'{tip} (valid here: {', '.join(valid)})"
    got = err.get("input")
    shown = f" (got {got!r})" if not isinstance(got, dict) else ""
    return f"{source}: {key or 'config'}: {err['msg']}{shown}"


def validate(data: dict, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e, source) for e in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines),
                          hint="`tuneforge train --help` and README 'Config tour' list every key") from None


def config_arguments(config: str | None, overrides: list[str] | None) -> tuple[str | None, list[str]]:
    """CLI arguments → (YAML path or None, overrides): a first argument that is `key=value` rather than a .yaml/.yml
    file is an override, so `tuneforge train model.name=x data.train=y` needs no config file."""
    overrides = list(overrides or [])
    if config and "=" in config and not config.endswith((".yaml", ".yml")):
        return None, [config, *overrides]
    return config, overrides


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load YAML (or start from defaults when path is None), apply overrides, expand paths, validate.

    Path-valued keys (see `_path_settings`) expand `${VAR}`/`$VAR` and a leading `~` once. Relative paths written in
    the YAML resolve against the YAML file's folder; relative paths given as overrides stay relative to the working
    directory, and so do output.dir and train.resume (runs are written where the command runs).
    """
    data: dict = {}
    source = "command line"
    overrides = list(overrides or [])
    if path is not None:
        p = Path(path)
        data = _read_yaml(p)
        source = str(p)
        resolve_paths(data, p.parent, source)
    data = apply_overrides(data, overrides)
    resolve_paths(data, None, "command line", only=[parse_override(o)[0] for o in overrides])
    return validate(data, source if not overrides else f"{source} (+ overrides)")


def _read_yaml(p: Path) -> dict:
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections (model:, data:, ...)")
    return data


_VAR = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z_]\w*))")
_VAR_NAME = re.compile(r"[A-Za-z_]\w*")


def expand_path(value: str, key: str, source: str) -> str:
    """`${VAR}` / `$VAR` from the environment, then a leading `~`. An unset or empty variable is an error."""
    def substitute(m: re.Match) -> str:
        name = m.group(1) if m.group(1) is not None else m.group(2)
        if not _VAR_NAME.fullmatch(name):
            raise ConfigError(f"{source}: {key}: '${{{name}}}' in {value!r} is not an environment variable name")
        if not os.environ.get(name):
            raise ConfigError(f"{source}: {key}: environment variable {name} is not set (used in {value!r})",
                              hint=f"export {name}=... before running, or write the path out in full")
        return os.environ[name]

    return os.path.expanduser(_VAR.sub(substitute, value))


# How a relative path is resolved: "data" (a file/folder, or left alone when it looks like a hub id), "model" (an
# existing folder, ./x, ../x or a .gguf; else an alias or hub id), "jinja" (a .jinja file; else a template name),
# "file" (always a path), "cwd" (expanded only: relative to the working directory), "function" (a reward named
# `file.py:function`: the file is a path; `module:function` and built-in names are left alone).
_SUFFIXES = {"data": DATA_FILE_SUFFIXES, "model": (".gguf",), "file": (), "jinja": ()}


def _resolve_one(value: str, base: Path | None, rule: str) -> str:
    if rule == "function":
        target, sep, func = value.rpartition(":")
        return _resolve_one(target, base, "file") + sep + func if sep and target.endswith(".py") else value
    p = Path(value)
    if value.startswith("modelscope:"):  # a ModelScope id, not a path
        return value
    if base is None or rule == "cwd" or p.is_absolute() or (rule == "jinja" and p.suffix != ".jinja"):
        return value
    if rule in ("file", "jinja") or value.startswith(("./", "../")) or p.suffix.lower() in _SUFFIXES[rule] \
            or (base / p).exists():
        return str((base / p).resolve())
    return value


def _path_settings(data: dict):
    """Every path-valued setting present: (key parts, shown key, container, index or field, rule)."""
    model, section = _sub(data, "model"), _sub(data, "data")
    yield ("model", "name"), "model.name", model, "name", "model"
    yield ("model", "template"), "model.template", model, "template", "jinja"
    for part in ("train", "eval"):
        items = section.get(part)
        if not isinstance(items, list):
            holder, field = (items, "path") if isinstance(items, dict) else (section, part)
            yield ("data", part), f"data.{part}" + (".path" if field == "path" else ""), holder, field, "data"
            continue
        for i, item in enumerate(items):
            if isinstance(item, dict):
                yield ("data", part), f"data.{part}[{i}].path", item, "path", "data"
            else:
                yield ("data", part), f"data.{part}[{i}]", items, i, "data"
    yield ("data", "dataset_info"), "data.dataset_info", section, "dataset_info", "file"
    classification = _sub(_sub(data, "eval"), "classification")
    yield ("eval", "classification", "data"), "eval.classification.data", classification, "data", "data"
    yield from _reward_paths(_sub(data, "stage"))
    yield ("output", "dir"), "output.dir", _sub(data, "output"), "dir", "cwd"
    train = _sub(data, "train")
    if train.get("resume") not in ("auto", "never", "force"):  # keywords, not paths
        yield ("train", "resume"), "train.resume", train, "resume", "cwd"
    yield ("train", "deepspeed_config"), "train.deepspeed_config", train, "deepspeed_config", "file"


def _reward_paths(stage: dict):
    """The paths inside an RL stage's rewards: a `file.py:function`, an rm run folder, a judge's rubric file."""
    rewards = stage.get("rewards")
    for i, reward in enumerate(rewards if isinstance(rewards, list) else []):
        if isinstance(reward, dict):
            for field, rule in (("name", "function"), ("model", "model"), ("rubric_file", "file")):
                yield ("stage", "rewards"), f"stage.rewards[{i}].{field}", reward, field, rule


def _sub(data: dict, key: str) -> dict:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def resolve_paths(data: dict, base: Path | None, source: str, only: list[list[str]] | None = None) -> None:
    """Expand every path-valued setting in place and resolve relative ones against `base` (None: leave them
    relative). With `only`, just the settings under those keys."""
    for parts, key, holder, field, rule in list(_path_settings(data)):
        if only is not None and not any(tuple(o[:len(parts)]) == parts[:len(o)] for o in only):
            continue
        if isinstance(holder, dict) and field not in holder:
            continue
        value = holder[field]
        if isinstance(value, str):
            holder[field] = _resolve_one(expand_path(value, key, source), base, rule)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True),
                          encoding="utf-8")
