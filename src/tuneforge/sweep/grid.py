"""The cells of a sweep: every data size × every combination of the `--grid KEY=V1,V2,...` values.

A grid value is written like a `key=value` override of `tuneforge train` and applied through the same code
(`tuneforge.config.load.apply_overrides`, YAML scalars), on top of the sweep's base config. One exception keeps a
method shoot-out simple: a cell whose `method.type` differs from the base config's starts that method from its
defaults. The base config's method keys the new method does not accept are dropped (and reported: `Cell.dropped`),
the keys it does accept are kept (`target_modules` of lora for dora), then the cell's other `method.*` values
apply. Without this, `method.r=16` of a lora base config would make every ia3 cell invalid.

Every cell's config is validated (schema, stage and method parameters, the compatibility table) when the cells are
planned, so a bad cell stops the sweep before anything trains, naming the cell.

Cell names are folder names: `n<size>` for a pure data-size sweep (as before grids existed), else
`n<size>-<key>=<value>-...` in grid order, with every character outside `[A-Za-z0-9._=+-]` replaced and a short
hash of the exact values appended when something was replaced or the name was shortened, so names stay unique.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field

from tuneforge.utils.errors import ConfigError

GRID_HINT = "e.g. --grid method.type=lora,ia3 --grid train.learning_rate=1e-4,2e-4"

# Keys a grid may not vary: the sweep sets them itself for every cell, or they shape the shared pool of rows.
RESERVED = {
    "data.train": "the sweep trains every cell on its own subset of the training data (vary it with --data-sizes)",
    "data.eval": "every cell is evaluated on the same rows (choose them with --eval)",
    "data.val_size": "the sweep holds out the eval rows once for all cells",
    "data.max_samples": "the sweep sizes the training data itself (use --data-sizes)",
    "data.mix": "the training data is loaded once for all cells",
    "data.seed": "the training data is shuffled once, with the base config's data.seed, for all cells",
    "data.dataset_info": "the training data is loaded once for all cells",
    "data.on_error": "the training data is loaded once for all cells",
    "stage.type": "every cell trains the base config's stage (the subsets are written for it)",
    "eval.classification": "the sweep evaluates every cell once after training (use --labels)",
    "output": "the sweep chooses every cell's output folder",
    "tags": "the sweep tags every cell itself",
}

_NAME_CHARS = re.compile(r"[^A-Za-z0-9._=+-]")
_MAX_NAME = 80


@dataclass
class Cell:
    """One training run of the sweep: a data size and the grid values on top of the base config."""

    name: str
    size: int
    overrides: dict[str, str]  # grid key → value as given on the command line
    cfg: object  # the base config with the overrides applied (a validated RunConfig)
    dropped: list[str] = field(default_factory=list)  # base method keys the cell's method does not accept


def split_values(text: str) -> list[str]:
    """"lora,ia3" → ["lora", "ia3"]; commas inside [...] or {...} stay ("[q_proj,v_proj],all" → 2 values)."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return [v for v in values if v != ""]


def _reserved_reason(key: str) -> str | None:
    for reserved, reason in RESERVED.items():
        if key == reserved or key.startswith(reserved + "."):
            return reason
    return None


def _grid_key(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"--grid {item!r} is not KEY=V1,V2,...", hint=GRID_HINT)
    key, values = (part.strip() for part in item.split("=", 1))
    if not key:
        raise ConfigError(f"--grid {item!r} has no key", hint=GRID_HINT)
    key = "method.type" if key == "method" else key  # `method=ia3` names the method, as in a config file
    reason = _reserved_reason(key)
    if reason:
        raise ConfigError(f"--grid {key}: a sweep cannot vary it: {reason}",
                          hint="set it in the config (or as key=value) for all cells")
    return key, values


def parse_grid(items: list[str] | None) -> dict[str, list[str]]:
    """["method.type=lora,ia3", "train.learning_rate=1e-4,2e-4"] → {key: [values as given]}, in the given order;
    repeated values are kept once. A key given twice, a key without values or a reserved key is an error."""
    grid: dict[str, list[str]] = {}
    for item in items or []:
        key, text = _grid_key(item)
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice", hint=f"list all its values once: --grid {key}=A,B,C")
        values = list(dict.fromkeys(split_values(text)))
        if not values:
            raise ConfigError(f"--grid {key} has no values", hint=GRID_HINT)
        grid[key] = values
    return grid


def cell_name(size: int, overrides: dict[str, str]) -> str:
    """`n500` or `n500-method.type=ia3-train.learning_rate=1e-4`, safe as a folder name (see module docstring)."""
    raw = "-".join([f"n{size}"] + [f"{k}={v}" for k, v in overrides.items()])
    safe = _NAME_CHARS.sub("_", raw)
    if safe == raw and len(raw) <= _MAX_NAME:
        return raw
    digest = hashlib.sha1(raw.encode()).hexdigest()[:8]
    return f"{safe[:_MAX_NAME].rstrip('-_')}-{digest}"


def _flat_method_params(section: dict, new_type: str) -> dict:
    """The base `method:` section's parameters as flat keys; the older nested form of the base method (or of the
    new one) is read as its flat keys."""
    params = {k: v for k, v in section.items() if k != "type"}
    for name in (section.get("type"), new_type):
        nested = params.get(name)
        if isinstance(nested, dict):
            params = {**nested, **{k: v for k, v in params.items() if k != name}}
    return params


def switch_method(section: dict, new_type: str) -> tuple[dict, list[str]]:
    """The `method:` section of `new_type` started from its defaults plus the base section's keys it accepts, and
    the base keys dropped because it does not accept them."""
    from tuneforge.methods import get_method

    method = get_method(new_type)
    accepted = method.Params.model_fields
    params = _flat_method_params(section, method.name)
    kept = {k: v for k, v in params.items() if k in accepted}
    return {"type": method.name, **kept}, [k for k in params if k not in accepted]


def _override_value(key: str, text: str):
    from tuneforge.config.load import parse_override

    return parse_override(f"{key}={text}")[1]


def build_cell_config(base_cfg, overrides: dict[str, str]) -> tuple[object, list[str]]:
    """(the base config + the overrides as a validated RunConfig, base method keys dropped by a method switch)."""
    from tuneforge.config.load import apply_overrides, parse_override, resolve_paths, validate

    data = base_cfg.model_dump(mode="json")
    dropped: list[str] = []
    if "method.type" in overrides:
        new_type = str(_override_value("method.type", overrides["method.type"]))
        if new_type != data["method"]["type"]:
            data["method"], dropped = switch_method(data["method"], new_type)
    items = [f"{k}={v}" for k, v in overrides.items()]
    data = apply_overrides(data, items)
    resolve_paths(data, None, "--grid", only=[parse_override(i)[0] for i in items])
    dropped = [k for k in dropped if f"method.{k}" not in overrides]
    return validate(data, "--grid values"), dropped


def check_cell_config(cfg) -> None:
    """What `tuneforge train` checks before loading anything: the stage's and the method's own parameters, the
    stage's data rules and the stage × method compatibility table."""
    from tuneforge.config import compat
    from tuneforge.methods import method_and_params
    from tuneforge.stages import stage_and_params
    from tuneforge.stages.compat import check_stage_compat

    stage, _ = stage_and_params(cfg)
    method_and_params(cfg)
    check_stage_compat(cfg, stage)
    compat.check(cfg)


def build_cell(base_cfg, size: int, overrides: dict[str, str]) -> Cell:
    """One validated cell; a ConfigError names the cell and says what is wrong with it."""
    name = cell_name(size, overrides)
    try:
        cfg, dropped = build_cell_config(base_cfg, overrides)
        check_cell_config(cfg)
    except ConfigError as err:
        shown = " ".join(f"{k}={v}" for k, v in overrides.items()) or "(the base config)"
        raise ConfigError(f"sweep cell {name} ({shown}): {err.message}",
                          hint=err.hint or "fix or remove that --grid value") from None
    return Cell(name, size, dict(overrides), cfg, dropped)


def plan_cells(base_cfg, sizes: list[int], grid: dict[str, list[str]]) -> list[Cell]:
    """Every size × every combination of the grid values (sizes outermost, grid keys in their given order)."""
    keys = list(grid)
    return [build_cell(base_cfg, size, dict(zip(keys, combo)))
            for size in sizes for combo in itertools.product(*(grid[k] for k in keys))]


def describe_dropped(cell: Cell, base_method: str) -> str:
    """"method ia3 starts from its defaults: dropped method.r (set for lora in the base config)" or ""."""
    if not cell.dropped:
        return ""
    keys = ", ".join(f"method.{k}" for k in cell.dropped)
    return f"method {cell.cfg.method.type} starts from its defaults: dropped {keys} (set for {base_method} " \
           f"in the base config)"
