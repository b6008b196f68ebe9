"""Training methods as plug-ins: one module per family, registered in METHODS (see methods/base.py for the contract).

Adding a method: a `Method` subclass (PEFT-backed ones subclass `PeftMethod` and give a PeftConfig), one row here,
its compatibility rules in `tuneforge.config.compat` (if it has limits), `examples/sft_<name>.yaml`, and its tests.
"""

from __future__ import annotations

from tuneforge.config.schema import pick_plugin
from tuneforge.methods.adalora import AdaLoraMethod
from tuneforge.methods.base import Method, MethodParams, ParamCount, count_parameters
from tuneforge.methods.bitfit import BitfitMethod
from tuneforge.methods.bottleneck import AdapterMethod, UnipeltMethod
from tuneforge.methods.freeze import FreezeMethod
from tuneforge.methods.full import FullMethod
from tuneforge.methods.ia3 import Ia3Method
from tuneforge.methods.llama_pro import LlamaProMethod
from tuneforge.methods.longlora import LongLoraMethod
from tuneforge.methods.lora import DoraMethod, LoraMethod
from tuneforge.methods.lowrank_optim import ApolloMethod, GaloreMethod
from tuneforge.methods.mixture_of_depths import MixtureOfDepthsMethod
from tuneforge.methods.prompt import PrefixTuning, PromptTuning, Ptuning, PtuningV2
from tuneforge.methods.qlora import QloraMethod
from tuneforge.utils.errors import ConfigError

METHODS: dict[str, Method] = {m.name: m for m in (
    FullMethod(), FreezeMethod(), LlamaProMethod(), GaloreMethod(), ApolloMethod(), LoraMethod(), QloraMethod(),
    DoraMethod(), LongLoraMethod(), AdaLoraMethod(), Ia3Method(),
    BitfitMethod(), AdapterMethod(), UnipeltMethod(), MixtureOfDepthsMethod(),
    PromptTuning(), Ptuning(), PrefixTuning(), PtuningV2())}


def get_method(name) -> Method:
    """The method registered under `name` (a MethodSection or its type); unknown names get "did you mean"."""
    return pick_plugin(METHODS, name, "method")


def method_and_params(cfg) -> tuple[Method, MethodParams]:
    """The configured method and its validated parameters (ConfigError naming the `method.` key otherwise).
    `cfg`: a RunConfig or its MethodSection."""
    section = getattr(cfg, "method", cfg)
    method = get_method(section)
    raw = _own_keys(method, dict(section.params))
    foreign = {k: owners for k in raw if k not in method.Params.model_fields
               and (owners := [m.name for m in METHODS.values() if k in m.Params.model_fields])}
    if foreign:
        key, owners = next(iter(foreign.items()))
        raise ConfigError(f"method.{key} is a parameter of method {' / '.join(owners)}, not of {method.name}",
                          hint=f"set method.type={owners[0]}, or remove method.{key}")
    return method, method.params(raw)


def method_section(method: Method, params: MethodParams) -> dict:
    """The `method:` section with every parameter spelled out (what the run's config.yaml records)."""
    return {"type": method.name, **params.model_dump(mode="json")}


def _own_keys(method: Method, raw: dict) -> dict:
    """Read the older nested form (`method: {type: lora, lora: {r: 16}}`) as flat keys. A nested section of another
    method is an error unless it only repeats that method's defaults (older tuneforge wrote every section)."""
    nested = raw.pop(method.name, None)
    if isinstance(nested, dict):
        raw = {**nested, **raw}
    for other in [k for k, v in raw.items() if k in METHODS and isinstance(v, dict)]:
        section = raw.pop(other)
        defaults = METHODS[other].Params().model_dump(mode="json")
        if any(k not in defaults or defaults[k] != v for k, v in section.items()):
            raise ConfigError(f"method.{other}.* is set, but method.type is {method.name}",
                              hint=f"set method.type={other} to use those settings, or remove method.{other}")
    return raw


def apply_method(model, section, **context):
    """Apply the configured method (a MethodSection) to `model`; `context`: total_steps, tok (see Method.apply)."""
    method, params = method_and_params(section)
    return method.apply(model, params, **context)


__all__ = ["METHODS", "Method", "MethodParams", "ParamCount", "apply_method", "count_parameters", "get_method",
           "method_and_params", "method_section"]
