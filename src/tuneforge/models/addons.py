"""Trainable modules tuneforge adds to a transformers model where PEFT has none: bottleneck adapters (adapter
tuning) and UniPELT's gated LoRA and gated prefix. They are attached as children of existing modules (names start
with `tf_`), so the base weights keep their names and a Trainer checkpoint of the whole model resumes as is.

Their artifact is an adapter folder of our own: `tuneforge_adapter.json` (kind, its settings, the base) and
`adapter_model.safetensors` with the added tensors only. `load_for_inference` and every command that takes
`--adapter` read it like a PEFT folder (`is_adapter_dir`). A bottleneck has a nonlinearity, so nothing here merges
into the base weights.

Where each piece goes (Llama-family names):
- bottleneck adapter: on the output of `o_proj` (attention) and/or `down_proj` (MLP), just before each is added to
  the residual stream (Houlsby: both; Pfeiffer: the MLP only); its up-projection starts at zero, so the model is
  unchanged at the first step.
- gated LoRA: a low-rank update on `q_proj` / `v_proj`, scaled per token by a learned sigmoid gate; B starts at zero.
- gated prefix: `length` trained key/value vectors per layer, prepended inside attention; a per-head, per-token gate
  g in (0, 1) multiplies each prefix position's attention weight before normalisation (log g is added to its score),
  so g → 0 switches the prefix off for that token. Prefixes never enter the KV cache: generation sees them at
  every step. This needs our attention function (`tuneforge_prefix`, SDPA underneath).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from tuneforge.utils.errors import ModelError

MARKER = "tuneforge_adapter.json"
WEIGHTS = "adapter_model.safetensors"
PREFIX_ATTENTION = "tuneforge_prefix"
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class Bottleneck(nn.Module):
    """y + up(act(down(y))), optionally times a sigmoid gate read from y (UniPELT)."""

    def __init__(self, dim: int, size: int, activation: str = "relu", gated: bool = False):
        super().__init__()
        self.down, self.act, self.up = nn.Linear(dim, size), _ACTIVATIONS[activation](), nn.Linear(size, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.gate = nn.Linear(dim, 1) if gated else None

    def forward(self, y):
        h = y.to(self.down.weight.dtype)
        out = self.up(self.act(self.down(h)))
        if self.gate is not None:
            out = out * torch.sigmoid(self.gate(h))
        return y + out.to(y.dtype)


class GatedLora(nn.Module):
    """The low-rank update g(x) · (alpha / r) · B A x of one linear layer; B starts at zero."""

    def __init__(self, d_in: int, d_out: int, r: int, alpha: float):
        super().__init__()
        self.A, self.B = nn.Linear(d_in, r, bias=False), nn.Linear(r, d_out, bias=False)
        nn.init.kaiming_uniform_(self.A.weight, a=5 ** 0.5)
        nn.init.zeros_(self.B.weight)
        self.gate, self.scale = nn.Linear(d_in, 1), alpha / r

    def forward(self, x):
        h = x.to(self.A.weight.dtype)
        return torch.sigmoid(self.gate(h)) * self.B(self.A(h)) * self.scale


class GatedPrefix(nn.Module):
    """`length` key and value vectors per key/value head, and a gate per query head read from the query."""

    def __init__(self, kv_heads: int, heads: int, head_dim: int, length: int):
        super().__init__()
        self.key = nn.Parameter(torch.randn(kv_heads, length, head_dim) * 0.02)
        self.value = nn.Parameter(torch.randn(kv_heads, length, head_dim) * 0.02)
        self.gate_weight = nn.Parameter(torch.zeros(heads, head_dim))
        self.gate_bias = nn.Parameter(torch.zeros(heads))

    def log_gate(self, query):
        """log g for every (batch, head, query position): (B, H, Q, 1)."""
        score = torch.einsum("bhqd,hd->bhq", query.to(self.gate_weight.dtype), self.gate_weight)
        return nn.functional.logsigmoid(score + self.gate_bias[:, None])[..., None]


def _extend_output(module, inputs, output):
    """Forward hook on a linear layer carrying `tf_lora` and/or `tf_adapter`."""
    lora = getattr(module, "tf_lora", None)
    if lora is not None:
        output = output + lora(inputs[0]).to(output.dtype)
    adapter = getattr(module, "tf_adapter", None)
    return adapter(output) if adapter is not None else output


def _hook(linear: nn.Module) -> None:
    if _extend_output not in linear._forward_hooks.values():
        linear.register_forward_hook(_extend_output)


def _linears(model, names) -> list[tuple[str, nn.Linear]]:
    found = [(n, m) for n, m in model.named_modules()
             if n.rsplit(".", 1)[-1] in names and isinstance(m, nn.Linear) and ".layers." in n]
    if not found:
        present = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ModelError(f"this model has no decoder linear layers named {', '.join(names)}",
                         hint=f"its linear layers: {', '.join(present[:20])} (set the method's target names)")
    return found


def attach_bottlenecks(model, targets, reduction_factor: int, activation: str, gated: bool = False) -> None:
    for _, linear in _linears(model, targets):
        size = max(1, linear.out_features // reduction_factor)
        linear.tf_adapter = Bottleneck(linear.out_features, size, activation, gated).to(linear.weight.device)
        _hook(linear)


def attach_gated_lora(model, targets, r: int, alpha: float) -> None:
    for _, linear in _linears(model, targets):
        linear.tf_lora = GatedLora(linear.in_features, linear.out_features, r, alpha).to(linear.weight.device)
        _hook(linear)


def attach_gated_prefix(model, length: int) -> None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    attentions = [m for n, m in model.named_modules() if n.endswith("self_attn") and ".layers." in n]
    if not attentions:
        raise ModelError("this model has no `self_attn` modules to give a prefix",
                         hint="UniPELT's prefix needs a Llama-family model; use method adapter or lora")
    for attn in attentions:
        attn.tf_prefix = GatedPrefix(kv_heads, heads, head_dim, length).to(next(attn.parameters()).device)
    _use_prefix_attention(model)


def _use_prefix_attention(model) -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(PREFIX_ATTENTION, prefix_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PREFIX_ATTENTION, sdpa_mask)
    for config in {id(c): c for c in (model.config, *_sub_configs(model.config))}.values():
        config._attn_implementation = PREFIX_ATTENTION


def _sub_configs(config):
    return [getattr(config, k) for k in getattr(config, "sub_configs", {}) if getattr(config, k, None) is not None]


def prefix_attention(module, query, key, value, attention_mask, **kwargs):
    """SDPA over [prefix; keys] with the prefix positions' scores shifted by log g (see the module docstring)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prefix = getattr(module, "tf_prefix", None)
    if prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    b, heads, q_len, _ = query.shape
    k_len = key.shape[2]
    allowed = _allowed(attention_mask, q_len, k_len, query.device)
    bias = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device).masked_fill(~allowed, float("-inf"))
    real = bias.expand(b, heads, q_len, k_len)
    gate = prefix.log_gate(query).to(query.dtype).expand(b, heads, q_len, prefix.key.shape[1])
    keys = torch.cat([prefix.key.to(key.dtype).expand(b, -1, -1, -1), key], dim=2)
    values = torch.cat([prefix.value.to(value.dtype).expand(b, -1, -1, -1), value], dim=2)
    kwargs.pop("is_causal", None)
    return sdpa_attention_forward(module, query, keys, values, torch.cat([gate, real], dim=-1), is_causal=False,
                                  **kwargs)


def _allowed(attention_mask, q_len: int, k_len: int, device):
    """Which keys each query may see, as a boolean (B|1, 1|H, Q, K) tensor; None from the mask builder means plain
    causal, where the queries are the last `q_len` of `k_len` positions."""
    if attention_mask is None:
        q = torch.arange(k_len - q_len, k_len, device=device)[:, None]
        return (torch.arange(k_len, device=device)[None, :] <= q)[None, None]
    if attention_mask.dtype == torch.bool:
        return attention_mask[..., :k_len]
    return attention_mask[..., :k_len] == 0


ATTACH = {"bottleneck": lambda model, c: attach_bottlenecks(model, c["targets"], c["reduction_factor"],
                                                            c["activation"]),
          "unipelt": lambda model, c: attach_unipelt(model, c)}


def attach_unipelt(model, c: dict) -> None:
    attach_gated_lora(model, c["lora_targets"], c["r"], c["alpha"])
    attach_gated_prefix(model, c["prefix_length"])
    attach_bottlenecks(model, c["adapter_targets"], c["reduction_factor"], c["activation"], gated=True)


def attach(model, kind: str, settings: dict) -> None:
    """Add the untrained modules of `kind` (a key of ATTACH) to `model` and freeze everything else."""
    for p in model.parameters():
        p.requires_grad_(False)
    ATTACH[kind](model, settings)
    for name, p in model.named_parameters():
        if _is_addon(name):
            p.requires_grad_(True)


def _is_addon(name: str) -> bool:
    return any(part.startswith("tf_") for part in name.split("."))


def save(model, folder, kind: str, settings: dict) -> None:
    """Write the added tensors and the marker (with the base's name, as PEFT records it)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if _is_addon(n)}
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
    base = getattr(model.config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    marker = {"format": 1, "kind": kind, "settings": settings, "base_model_name_or_path": base,
              "tensors": len(tensors)}
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def is_adapter_dir(path) -> bool:
    """A folder holding an adapter: a PEFT one (adapter_config.json) or ours."""
    return (Path(path) / "adapter_config.json").is_file() or (Path(path) / MARKER).is_file()


def read_marker(folder) -> dict | None:
    path = Path(folder) / MARKER
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def load(model, folder):
    """`model` with the adapter in `folder` attached and its trained tensors loaded (strict: every added tensor)."""
    from safetensors.torch import load_file

    marker = read_marker(folder)
    if marker is None or marker.get("kind") not in ATTACH:
        raise ModelError(f"{folder} is not a tuneforge adapter folder ({MARKER} missing or of an unknown kind)",
                         hint="pass the 'adapter' folder of a run trained with method adapter or unipelt")
    attach(model, marker["kind"], marker["settings"])
    own = {n for n, _ in model.named_parameters() if _is_addon(n)}
    state = load_file(str(Path(folder) / WEIGHTS), device=str(next(model.parameters()).device))
    hint = f"load it on the base it was trained on: {marker.get('base_model_name_or_path')}"
    if set(state) != own:
        raise ModelError(f"{folder}: the saved adapter does not fit this model ({len(set(state) ^ own)} tensors "
                         f"differ, e.g. {sorted(set(state) ^ own)[:2]})", hint=hint)
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # same names, other shapes
        raise ModelError(f"{folder}: the saved adapter does not fit this model: {err}", hint=hint) from None
    return model
