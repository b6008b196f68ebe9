"""`tuneforge doctor [CONFIG]`: versions, devices, free memory, and whether a run's training will fit in memory."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from typing import Optional

import typer

from tuneforge.utils.console import console
from tuneforge.utils.errors import TuneforgeError

DOCTOR_HELP = """Check this machine (versions, devices, free memory); with CONFIG, estimate the run's training memory.

\b
The estimate is computed BEFORE anything loads, from the model's shape (config.json or GGUF metadata): weights,
gradients, AdamW state (2 fp32 values per trainable parameter), activations (layers x batch x cutoff_len x hidden)
and logits (batch x cutoff_len x vocab x 4 bytes, often the largest term for small models). It assumes every
batch is cutoff_len long (the worst case; always so with data.packing). When it exceeds the free memory of the
device, cheaper settings are suggested (LoRA, smaller batch with grad_accum, shorter cutoff_len, gradient
checkpointing) with their estimates. Exit code 1 when the run is not expected to fit.
  tuneforge doctor
  tuneforge doctor examples/quickstart.yaml train.batch_size=16 --json
"""

_PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "tuneforge")


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def devices() -> dict:
    """CPU cores and RAM, CUDA GPUs with free/total memory, MPS availability."""
    import psutil
    import torch

    mem = psutil.virtual_memory()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"cpu": {"cores": cores, "ram_total": mem.total, "ram_available": mem.available}, "cuda": [],
            "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            info["cuda"].append({"index": i, "name": torch.cuda.get_device_name(i), "free": free, "total": total})
    return info


def _setting(cfg, device: str, shape):
    """TrainSetting for `cfg` on a model of `shape`, with its auto values resolved (the data is loaded to count rows;
    not the model)."""
    from tuneforge.config.auto import resolve_auto
    from tuneforge.data.run_records import load_train_records
    from tuneforge.methods import method_and_params
    from tuneforge.models.memory import TrainSetting
    from tuneforge.stages import get_stage

    note = None
    try:
        n_rows = len(load_train_records(cfg, prompts=get_stage(cfg.stage).trains_on_prompts)[0])
    except TuneforgeError as err:
        n_rows, note = 0, f"training data not loaded ({err.message}); auto values assume a small dataset"
    bf16 = device.startswith("cuda") and _cuda_bf16()
    method, params = method_and_params(cfg)
    r = resolve_auto(cfg.train, method, n_rows, device, bf16, model_params=shape.n_params)
    return TrainSetting(method=method.name, batch_size=r.batch_size, seq_len=cfg.data.cutoff_len,
                        precision=r.precision, gradient_checkpointing=r.gradient_checkpointing,
                        device="cpu" if not device.startswith("cuda") else "cuda", frozen_base=method.frozen_base,
                        base_bytes_per_weight=method.base_bytes_per_weight(params),
                        trainable=method.estimate_trainable(shape, params),
                        trainable_layers=getattr(params, "trainable_layers", 2),
                        train_embeddings=getattr(params, "train_embeddings", False)), note


def _cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def memory_check(cfg, dev: dict) -> dict:
    """The estimate for `cfg` on its device against that device's free memory, with cheaper settings if needed."""
    from tuneforge.models.load import pick_device
    from tuneforge.models.memory import cheaper_settings, estimate_training_memory, read_model_shape

    device = pick_device(cfg.model.device)
    shape = read_model_shape(cfg.model.name)
    setting, note = _setting(cfg, device, shape)
    est = estimate_training_memory(shape, setting)
    if device.startswith("cuda") and dev["cuda"]:
        index = int(device.split(":")[1]) if ":" in device else 0
        free, where = dev["cuda"][index]["free"], f"free memory of GPU {index}"
    else:
        free, where = dev["cpu"]["ram_available"], "available RAM"
    fits = est.total <= free
    return {"model": cfg.model.name, "shape": shape.__dict__, "device": device, "setting": setting.__dict__,
            "trainable_params": est.trainable_params, "terms": est.terms, "total": est.total, "free": free,
            "free_what": where, "fits": fits, "note": note,
            "suggestions": [] if fits else [{"change": c, "total": t, "fits": t <= free}
                                            for c, t in cheaper_settings(shape, setting, free, cfg.train.grad_accum)]}


def _print_report(env: dict, dev: dict, mem: dict | None) -> None:
    from rich.table import Table

    from tuneforge.models.memory import human_bytes as hb

    console.print("versions: " + ", ".join(f"{k} {v or '[red]missing[/red]'}" for k, v in env.items()))
    cpu = dev["cpu"]
    console.print(f"cpu: {cpu['cores']} cores, RAM {hb(cpu['ram_available'])} available of {hb(cpu['ram_total'])}")
    for g in dev["cuda"]:
        console.print(f"cuda:{g['index']}: {g['name']}, {hb(g['free'])} free of {hb(g['total'])}")
    console.print(f"mps: {'available' if dev['mps'] else 'no'}" if not dev["cuda"] else "", end="")
    if mem is None:
        return
    s, sh = mem["setting"], mem["shape"]
    console.print(f"\nmemory estimate for {mem['model']} ({sh['n_params'] / 1e6:.1f}M params, {sh['n_layers']} layers, "
                  f"hidden {sh['hidden']}, vocab {sh['vocab']}) · {s['method']} · batch {s['batch_size']} · "
                  f"cutoff {s['seq_len']} · {s['precision']} · gradient checkpointing "
                  f"{'on' if s['gradient_checkpointing'] else 'off'} · {mem['device']}")
    table = Table(header_style="bold")
    table.add_column("term")
    table.add_column("estimate", justify="right")
    for name, n in mem["terms"].items():
        table.add_row(name, hb(n))
    table.add_row("[bold]total[/bold]", f"[bold]{hb(mem['total'])}[/bold]")
    console.print(table)
    if mem["note"]:
        console.print(f"[yellow]note:[/yellow] {mem['note']}")
    verdict = "[green]fits[/green]" if mem["fits"] else "[bold red]will NOT fit[/bold red]"
    console.print(f"{verdict} in the {mem['free_what']} ({hb(mem['free'])}); worst case, every batch at cutoff_len")
    for sug in mem["suggestions"]:
        console.print(f"  try {sug['change']}: ~{hb(sug['total'])}{'' if sug['fits'] else ' (still too much)'}")


def doctor_cmd(
    config: Optional[str] = typer.Argument(None, help="YAML run config to estimate memory for (optional)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted overrides, e.g. train.batch_size=4"),
    as_json: bool = typer.Option(False, "--json", help="print JSON to stdout instead of text"),
) -> None:
    from tuneforge.config.load import config_arguments, load_config

    config, overrides = config_arguments(config, overrides)
    env, dev = versions(), devices()
    mem = memory_check(load_config(config, overrides), dev) if (config or overrides) else None
    if as_json:
        sys.stdout.write(json.dumps({"versions": env, "devices": dev, "memory": mem}, indent=2) + "\n")
    else:
        _print_report(env, dev, mem)
    if mem is not None and not mem["fits"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor", help=DOCTOR_HELP)(doctor_cmd)
