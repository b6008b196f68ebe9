"""`tuneforge config show [CONFIG] [key=value ...]`: every run-config key with its type, default and help, read from
the pydantic schema (so it never drifts from what `train` accepts), and for a given config its resolved values."""

from __future__ import annotations

import json
import sys
import types
from typing import Any, Literal, Optional, Union, get_args, get_origin

import typer
from pydantic import BaseModel

from tuneforge.config.schema import RunConfig
from tuneforge.utils.errors import TuneforgeError

app = typer.Typer(help="Run configuration: every key, its default and meaning; a config's resolved values.",
                  no_args_is_help=True)

SHOW_HELP = """List every key of the run config with its type, default and help.

\b
With CONFIG (and dotted key=value overrides, as `tuneforge train` takes them) it adds the config's value of each key,
and resolves `auto` values (epochs, batch_size, learning_rate, gradient_checkpointing, precision, lora alpha) the
way training will: the training data is loaded (not the model) to count its rows.
  tuneforge config show                                  # the schema
  tuneforge config show examples/quickstart.yaml train.epochs=1
  tuneforge config show examples/quickstart.yaml --json  # [{key, type, default, help, value, resolved}, ...]
"""


def _type_name(ann: Any) -> str:
    origin, args = get_origin(ann), get_args(ann)
    if ann is type(None):
        return "null"
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return "|".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        return f"list[{_type_name(args[0])}]" if args else "list"
    if origin is dict:
        return f"dict[{', '.join(_type_name(a) for a in args)}]"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "mapping"
    return getattr(ann, "__name__", str(ann))


def _section_of(ann: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the BaseModel inside an annotation, whether it is a list of them) or (None, False)."""
    origin = get_origin(ann)
    for cand in (get_args(ann) if origin in (Union, types.UnionType, list) else ()) + (ann,):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand, origin is list
    return None, False


def schema_rows(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[dict]:
    """One row per key: {"key", "type", "default", "help"}; nested sections are flattened to dotted keys."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section, is_list = _section_of(field.annotation)
        if section is not None and not is_list and field.annotation is section:
            rows += schema_rows(section, f"{key}.")
            continue
        default = "(required)" if field.is_required() else field.get_default(call_default_factory=True)
        rows.append({"key": key, "type": _type_name(field.annotation),
                     "default": default.model_dump(mode="json") if isinstance(default, BaseModel) else default,
                     "help": field.description or "", "entries": is_list})
        if section is not None:  # a list of entries, or an optional section
            rows += schema_rows(section, f"{key}{'[]' if is_list else ''}.")
    return rows


def plugin_rows(cfg=None) -> list[dict]:
    """Rows for the parameters of the configured stage and method (their plug-ins own them: tuneforge.stages /
    tuneforge.methods), or of the default ones without a config; `stage.type` / `method.type` list every choice."""
    from tuneforge.methods import METHODS, get_method
    from tuneforge.stages import STAGES, get_stage

    rows = []
    for section, table, plugin in (("stage", STAGES, get_stage(cfg.stage if cfg else "sft")),
                                   ("method", METHODS, get_method(cfg.method if cfg else "lora"))):
        rows.append({"key": f"{section}.type", "type": "|".join(table), "default": "sft" if section == "stage"
                     else "lora", "help": f"the {section} (`tuneforge {section}s` lists them)", "entries": False})
        rows += [{**r, "help": f"({section} {plugin.name}) {r['help']}"}
                 for r in schema_rows(plugin.Params, f"{section}.")]
    return rows


def all_rows(cfg=None) -> list[dict]:
    """The run config's keys (the schema), with the configured stage's and method's parameters in their place."""
    plugins: dict[str, list[dict]] = {}
    for r in plugin_rows(cfg):
        plugins.setdefault(r["key"].split(".")[0], []).append(r)
    rows = []
    for r in schema_rows():
        section = r["key"].split(".")[0]
        if section not in plugins:
            rows.append(r)
        else:
            rows += plugins.pop(section, None) or []
    return rows


def _value_at(data: Any, key: str) -> Any:
    for part in key.split("."):
        if part.endswith("[]"):
            return [_value_at(item, key.split("[].", 1)[1]) for item in (data or {}).get(part[:-2], [])]
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def resolved_auto(cfg) -> tuple[dict, str | None]:
    """{key: "value (reason)"} for `auto` values, resolved as training will; (partial, why not) on failure."""
    from tuneforge.config.auto import resolve_auto
    from tuneforge.data.run_records import load_train_records
    from tuneforge.models.load import pick_device
    from tuneforge.models.memory import model_size
    from tuneforge.methods import method_and_params
    from tuneforge.stages import get_stage

    resolved = {}
    method, params = method_and_params(cfg)
    if getattr(params, "alpha", 0) is None:
        rank = getattr(params, "r", None) or params.target_r
        resolved["method.alpha"] = f"{2 * rank} (2 × {'r' if hasattr(params, 'r') else 'target_r'})"
    try:
        records = load_train_records(cfg, prompts=get_stage(cfg.stage).trains_on_prompts)[0]
    except TuneforgeError as err:
        return resolved, f"auto values need the training data: {err.message}"
    device = pick_device(cfg.model.device)
    bf16 = device.startswith("cuda") and _cuda_bf16()
    size = model_size(cfg.model.name)
    chosen = resolve_auto(cfg.train, method, len(records), device, bf16, model_params=size).chosen
    resolved.update({f"train.{k}": v for k, v in chosen.items()})
    return resolved, None


def _spelled_out(cfg) -> dict:
    """The config as data, with the stage's and the method's parameters spelled out (defaults included)."""
    from tuneforge.methods import method_and_params, method_section
    from tuneforge.stages import stage_and_params

    data = cfg.model_dump(mode="json")
    stage, params = stage_and_params(cfg)
    data["stage"] = {"type": stage.name, **params.model_dump(mode="json")}
    data["method"] = method_section(*method_and_params(cfg))
    return data


def _cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _print_table(rows: list[dict], with_values: bool, note: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False, header_style="bold")
    table.add_column("key", style="cyan", no_wrap=True)
    if with_values:
        table.add_column("value")
    for col in ("default", "type", "help"):
        table.add_column(col, style="dim" if col != "help" else None)
    for r in rows:
        cells = [r["key"]]
        if with_values:
            shown = json.dumps(r["value"], ensure_ascii=False) if r["value"] is not None else "null"
            cells.append(f"{shown} → [green]{r['resolved']}[/green]" if r.get("resolved") else shown)
        cells += [json.dumps(r["default"], ensure_ascii=False), r["type"], r["help"]]
        table.add_row(*cells)
    out = Console(file=sys.stdout, highlight=False)
    out.print(table)
    if note:
        out.print(f"[yellow]note:[/yellow] {note}")


@app.command("show", help=SHOW_HELP)
def show_cmd(
    config: Optional[str] = typer.Argument(None, help="YAML run config (omit for the schema alone)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted overrides, e.g. train.epochs=2"),
    as_json: bool = typer.Option(False, "--json", help="print JSON to stdout instead of a table"),
) -> None:
    from tuneforge.config.load import config_arguments, load_config

    config, overrides = config_arguments(config, overrides)
    cfg = load_config(config, overrides) if config or overrides else None
    rows, note = all_rows(cfg), None
    if cfg is not None:
        data = _spelled_out(cfg)
        resolved, note = resolved_auto(cfg)
        for r in rows:
            value = _value_at(data, r["key"])
            r["value"] = f"{len(value)} entries (below)" if r.pop("entries") and value else value
            r["resolved"] = resolved.get(r["key"])
    for r in rows:
        r.pop("entries", None)
    if as_json:
        sys.stdout.write(json.dumps({"keys": rows, "note": note}, indent=2, ensure_ascii=False, default=str) + "\n")
    else:
        _print_table(rows, bool(config or overrides), note)
