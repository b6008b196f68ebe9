"""Read a run config: YAML file + dotted `key=value` overrides → validated RunConfig.

Errors name the key and the file, and unknown keys get a "did you mean" suggestion. The fully resolved config is
written to the output folder by the runner (`save_config`).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tuneforge.config.schema import RunConfig
from tuneforge.utils.errors import ConfigError


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.learning_rate=1e-4` → (["train", "learning_rate"], 1e-4). Values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not key=value", hint="e.g. train.epochs=3 method.lora.r=16")
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


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load YAML (or start from defaults when path is None), apply overrides, validate."""
    data: dict = {}
    source = "command line"
    if path is not None:
        p = Path(path)
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
        source = str(p)
        _resolve_relative_paths(data, p.parent)
    data = apply_overrides(data, overrides or [])
    return validate(data, source if not overrides else f"{source} (+ overrides)")


def _resolve_relative_paths(data: dict, base: Path) -> None:
    """Dataset paths and dataset_info written relative to the YAML file are resolved against its folder."""
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str):
        model["name"] = os.path.expandvars(model["name"])
        if model["name"].startswith(".") and (base / model["name"]).exists():
            model["name"] = str((base / model["name"]).resolve())
    section = data.get("data")
    if not isinstance(section, dict):
        return
    for key in ("train", "eval"):  # ${VAR} in paths, e.g. ${TUNEFORGE_SHARED}/data/...
        items = section.get(key)
        if isinstance(items, str):
            section[key] = os.path.expandvars(items)
        elif isinstance(items, list):
            section[key] = [os.path.expandvars(i) if isinstance(i, str) else
                            {**i, "path": os.path.expandvars(i["path"])} if isinstance(i, dict) and
                            isinstance(i.get("path"), str) else i for i in items]
    info = section.get("dataset_info")
    if isinstance(info, str) and not Path(info).is_absolute() and (base / info).exists():
        section["dataset_info"] = str((base / info).resolve())
    for key in ("train", "eval"):
        items = section.get(key)
        items = items if isinstance(items, list) else [items] if items else []
        fixed = []
        for item in items:
            if isinstance(item, str) and (base / item).exists():
                item = str((base / item).resolve())
            elif isinstance(item, dict) and isinstance(item.get("path"), str) and (base / item["path"]).exists():
                item = {**item, "path": str((base / item["path"]).resolve())}
            fixed.append(item)
        if items:
            section[key] = fixed


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True),
                          encoding="utf-8")
