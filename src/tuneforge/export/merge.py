"""Export a trained model as one standalone Hugging Face folder, then prove it behaves like what was trained.

LoRA adapters are merged into their base (`merge_and_unload`) in float32, cast to the export dtype and saved with the
tokenizer, its chat template and a generation_config whose eos ids include the template's end-of-turn ids. Full
fine-tuned run folders (no adapter) are re-saved the same way. The folder is then reloaded from disk and its logits
compared with base + adapter on sample conversations rendered with the chat template (see `tuneforge.export.parity`
for the tolerances). Nothing is written to the destination unless the check passes: the files are staged in a hidden
sibling folder, which is kept for inspection when the check fails.

A QLoRA adapter (its folder names the quantization its base trained in) learned to correct that quantized base. Its
reference is the adapter on the base quantized the same way (run on bitsandbytes' training path), and the merge goes
into that base dequantized (see `load_for_inference`), so the export is the model that was trained, quantization
error included, and the usual tolerances apply to it.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge.data.templates import ensure_chat_template, template_name, template_stop_token_ids
from tuneforge.export.parity import (
    ParityReport,
    max_abs_diff,
    parity_inputs,
    sample_logits,
    template_problems,
    tolerance_for,
)
from tuneforge.utils.console import console
from tuneforge.utils.errors import ModelError

EXPORT_META = "tuneforge_export.json"
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


@dataclass
class ExportReport:
    """Where the export went and how closely it reproduces base + adapter."""

    out: str
    base: str
    adapter: str | None
    dtype: str
    parity: ParityReport
    run_id: str | None = None  # the export's run in the registry (None when recording is off)

    @property
    def max_abs_diff(self) -> float:
        return self.parity.max_abs_diff

    @property
    def passed(self) -> bool:
        return self.parity.passed


@dataclass
class _Merged:
    model: object  # merged model, already cast to the export dtype
    tokenizer: object
    inputs: list[list[int]]
    reference: list[torch.Tensor]  # base + adapter logits, fp32
    in_dtype: list[torch.Tensor]  # merged model logits in the export dtype
    merge_diff: float
    dtype: torch.dtype


def _resolve_dtype(dtype: str, model: str) -> torch.dtype:
    """`auto`: the dtype the base model is stored in (float32 when unknown); else float32 / bfloat16 / float16."""
    from tuneforge.models.load import pick_dtype

    if dtype != "auto":
        return pick_dtype(dtype)
    from transformers import AutoConfig

    from tuneforge.models.load import local_path
    from tuneforge.models.source import resolve_model

    stored = getattr(AutoConfig.from_pretrained(local_path(resolve_model(model))), "dtype", None)
    if isinstance(stored, str):
        stored = getattr(torch, stored, None)
    return stored if stored in _DTYPE_NAMES else torch.float32


def _merge(model, adapter: str | None):
    """base + adapter → one plain model (kept separate so tests can break it on purpose)."""
    return model.merge_and_unload(safe_merge=True) if adapter else model


def _cast_parameters(model, dtype: torch.dtype) -> None:
    """Cast weights only: buffers such as rotary inv_freq stay float32, as `from_pretrained(dtype=...)` leaves them."""
    for p in model.parameters():
        p.data = p.data.to(dtype)
    model.config.dtype = dtype


def _refuse_adapter_as_model(model: str, adapter: str | None) -> None:
    from tuneforge.models.addons import is_adapter_dir

    if adapter is None and is_adapter_dir(model):
        raise ModelError(f"{model} is an adapter folder, not a model",
                         hint="pass it as --adapter and the base model it was trained on as --model")
    _refuse_mixture_of_depths(model)


def _refuse_mixture_of_depths(model: str) -> None:
    """A Mixture-of-Depths model's routers load only through tuneforge: as a plain folder they would be dropped."""
    from tuneforge.models.mod import KEY

    config = Path(model) / "config.json"
    if config.is_file() and KEY in json.loads(config.read_text(encoding="utf-8")):
        raise ModelError(f"{model} is a Mixture-of-Depths model: its routers load only through tuneforge, so a "
                         f"standalone export would silently be another model",
                         hint="use it in place (chat / generate / eval / serve with --model FOLDER)")


def _merged_in_memory(model: str, adapter: str | None, *, template: str, check_samples: int, device: str,
                      dtype: torch.dtype, template_text: str | None = None) -> _Merged:
    from tuneforge.models.load import adapter_quantization, load_for_inference, refuse_unmergeable

    _refuse_adapter_as_model(model, adapter)
    if adapter:
        refuse_unmergeable(adapter, "export merges adapters into the model")
    src, tok = load_for_inference(model, adapter, dtype="float32", device=device)
    if template_text is not None:  # re-checking an export: render with exactly the template it ships
        tok.chat_template = template_text
    elif template != "auto" or getattr(tok, "chat_template", None):
        ensure_chat_template(tok, template)
    else:
        console.print("[yellow]warning:[/yellow] the model has no chat template; exporting without one "
                      "(pass --template NAME to include the one you trained with)")
    inputs = parity_inputs(tok, check_samples)
    reference = sample_logits(src, inputs)
    quantization = adapter_quantization(adapter)
    if quantization is not None:  # the reference is the adapter on its base quantized as it trained
        reference = sample_logits(load_for_inference(model, adapter, dtype="float32", device=device,
                                                     quantization=quantization)[0], inputs)
    merged = _merge(src, adapter)
    fp32 = sample_logits(merged, inputs)
    merge_diff = max_abs_diff(fp32, reference)
    if dtype != torch.float32:
        _cast_parameters(merged, dtype)
        fp32 = sample_logits(merged, inputs)
    return _Merged(merged, tok, inputs, reference, fp32, merge_diff, dtype)


def _reload_and_compare(folder: Path, m: _Merged, device: str) -> ParityReport:
    """Load `folder` fresh from disk and compare it with the in-memory merge and with base + adapter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from tuneforge.models.load import pick_device

    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=m.dtype).to(pick_device(device)).eval()
    logits = sample_logits(reloaded, m.inputs)
    del reloaded
    tok = AutoTokenizer.from_pretrained(folder)
    eos = GenerationConfig.from_pretrained(folder).eos_token_id if (folder / "generation_config.json").is_file() \
        else None
    return ParityReport(merge_diff=m.merge_diff, export_diff=max_abs_diff(logits, m.in_dtype),
                        max_abs_diff=max_abs_diff(logits, m.reference), dtype=_DTYPE_NAMES[m.dtype],
                        tolerance=tolerance_for(m.dtype), samples=len(m.inputs),
                        tokens=sum(len(i) for i in m.inputs),
                        problems=template_problems(m.tokenizer, tok, m.inputs, eos))


def _check_destination(out: Path, overwrite: bool, inputs: list[str | None]) -> None:
    if out.exists() and not out.is_dir():
        raise ModelError(f"export destination {out} is a file", hint="pass a folder path as --out")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ModelError(f"export destination {out} already exists and is not empty; refusing to overwrite it",
                         hint="choose a new folder, or pass --overwrite (overwrite=True) to replace it")
    for p in filter(None, inputs):
        p = Path(p).expanduser().resolve()
        if p.exists() and (p == out or out in p.parents):
            raise ModelError(f"--out {out} holds the input {p}; overwriting it would destroy the source",
                             hint="export into a different folder")
    if out in (Path.home().resolve(), Path.cwd().resolve(), Path(out.anchor)):
        raise ModelError(f"refusing to replace {out} (home, current or root folder)", hint="pass a dedicated folder")


def _save(m: _Merged, staging: Path, meta: dict) -> None:
    model, tok = m.model, m.tokenizer
    stop_ids = template_stop_token_ids(tok) if getattr(tok, "chat_template", None) else []
    eos = list(dict.fromkeys([i for i in [tok.eos_token_id, *stop_ids] if i is not None]))
    gen = model.generation_config
    gen.eos_token_id = eos[0] if len(eos) == 1 else eos
    gen.pad_token_id = tok.pad_token_id
    model.save_pretrained(staging)
    tok.save_pretrained(staging)
    (staging / EXPORT_META).write_text(json.dumps(meta, indent=2) + "\n")
    (staging / "README.md").write_text(
        f"# Exported by tuneforge\n\nBase model: `{meta['base']}`  \nAdapter: `{meta['adapter'] or '(none)'}`  \n"
        f"Dtype: {meta['dtype']}  \nChat template: {meta['chat_template']}\n\n"
        "A standalone Hugging Face model folder: load it with `AutoModelForCausalLM.from_pretrained(folder)` and "
        "`AutoTokenizer.from_pretrained(folder)`; render prompts with `tokenizer.apply_chat_template`. "
        f"`{EXPORT_META}` holds the parity check against base + adapter.\n")


def merge_adapter(model: str, adapter: str | None, out: str, *, dtype: str = "auto", overwrite: bool = False,
                  check_samples: int = 4, template: str = "auto", device: str = "auto",
                  registry_url: str | None = None) -> ExportReport:
    """Merge `adapter` into `model` (or re-save a full fine-tuned `model` when adapter is None) into folder `out`.

    dtype: `auto` keeps the base model's stored dtype; or float32 / bfloat16 / float16. A non-empty `out` is refused
    unless `overwrite`, and never replaced when it contains the model or adapter. The export is reloaded and
    checked on `check_samples` chat-template-rendered conversations; on failure ParityError (a ModelError) is raised,
    `out` is left untouched and the staged files stay in a hidden sibling folder named in the message.
    template: as in `ensure_chat_template`; `auto` keeps the adapter's (saved by training) or the model's own.
    The export is recorded in the run registry as a run of kind "export" whose parent is the training run that
    produced the adapter / model folder (its run.json), so `tuneforge runs lineage` shows train → export.
    registry_url: the registry to record it in (default: $TUNEFORGE_REGISTRY_URL, else the usual one).
    """
    dest = Path(out).expanduser().resolve()
    _refuse_adapter_as_model(model, adapter)
    _check_destination(dest, overwrite, [model, adapter])
    target = _resolve_dtype(dtype, model)
    with _export_recorder(model, adapter, dest, target, registry_url) as recorder:
        parity = _export(model, adapter, dest, target, template=template, check_samples=check_samples,
                         device=device)
        recorder.add_artifact("merged", dest)
    return ExportReport(str(dest), model, adapter, _DTYPE_NAMES[target], parity, recorder.run_id)


def _export_recorder(model: str, adapter: str | None, dest: Path, dtype: torch.dtype, url: str | None = None):
    """A registry run (kind "export") for this export, child of the training run the adapter or model came from."""
    from tuneforge.models.source import resolve_model
    from tuneforge.registry.api import RunRecorder
    from tuneforge.registry.lineage import find_run_file

    run = find_run_file(adapter) or find_run_file(model)
    try:
        identity = resolve_model(model).identity
    except ModelError:  # identity is informative only; loading reports the real error
        identity = model
    config = {"base": model, "adapter": str(Path(adapter).resolve()) if adapter else None,
              "dtype": _DTYPE_NAMES[dtype], "out": str(dest)}
    return RunRecorder.start(kind="export", config=config, base_model=model, base_model_identity=identity,
                             method="lora-merged" if adapter else "full", output_dir=str(dest),
                             parent_run_id=run[1].get("run_id") if run else None, tags=["export"], url=url)


def _export(model: str, adapter: str | None, dest: Path, target: torch.dtype, *, template: str, check_samples: int,
            device: str) -> ParityReport:
    """Merge, stage, reload and check; move the staged folder to `dest` only when the check passes."""
    t0 = time.time()
    m = _merged_in_memory(model, adapter, template=template, check_samples=check_samples, device=device,
                          dtype=target)
    staging = dest.parent / f".{dest.name}.tuneforge-partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    from tuneforge.models.source import resolve_model

    meta = {"base": model, "base_identity": resolve_model(model).identity,
            "adapter": str(Path(adapter).resolve()) if adapter else None, "kind": "lora-merged" if adapter else "full",
            "dtype": _DTYPE_NAMES[target], "chat_template": template_name(m.tokenizer) or
            ("model's own" if getattr(m.tokenizer, "chat_template", None) else "none"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _save(m, staging, meta)
    del m.model
    gc.collect()
    report = _reload_and_compare(staging, m, device)
    meta.update(parity=report.as_dict(), seconds=round(time.time() - t0, 1))
    (staging / EXPORT_META).write_text(json.dumps(meta, indent=2) + "\n")
    report.raise_if_failed(f"export of {model}{' + ' + adapter if adapter else ''} (files kept in {staging})")
    if dest.exists():  # empty, or non-empty with overwrite (checked above)
        console.print(f"[dim]replacing {dest}[/dim]")
        shutil.rmtree(dest)
    staging.rename(dest)
    return report


def verify_export(out: str, model: str, adapter: str | None = None, *, check_samples: int = 4,
                  device: str = "auto") -> ParityReport:
    """Re-check an existing export folder against `model` + `adapter` (same checks as after `merge_adapter`)."""
    folder = Path(out).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder} is not an exported model folder (no config.json)")
    from transformers import AutoConfig, AutoTokenizer

    stored = getattr(AutoConfig.from_pretrained(folder), "dtype", None)
    stored = getattr(torch, stored, None) if isinstance(stored, str) else stored
    target = stored if stored in _DTYPE_NAMES else torch.float32
    template = getattr(AutoTokenizer.from_pretrained(folder), "chat_template", None)
    m = _merged_in_memory(model, adapter, template="auto", check_samples=check_samples, device=device, dtype=target,
                          template_text=template)
    del m.model
    gc.collect()
    return _reload_and_compare(folder, m, device)
