"""The models of an arena: what `--model NAME=SPEC` names, and the identity its cached answers are filed under.

SPEC is a base model (alias, folder, .gguf, hub id), `MODEL::ADAPTER`, an adapter folder (on the base its run
recorded, else the one its adapter_config.json names), a run folder (its final model or adapter, on its recorded
base), or `endpoint:URL#MODEL` (an OpenAI-compatible server). Without `NAME=` the name comes from the spec.

The identity says what produced an answer: the resolved weights (a hub id or folder path with its weight files'
sizes and times, a GGUF's hash, an adapter's weight hash) and the chat template's text; for an endpoint, its URL
and model name. Two names for the same identity share answers; a retrained folder or another template does not.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from tuneforge.utils.errors import ConfigError, ModelError

ENDPOINT = "endpoint:"
ADAPTER_SEP = "::"
_NAME = re.compile(r"^([A-Za-z0-9][\w.+-]*)=(.+)$")
_WEIGHTS = ("*.safetensors", "*.bin", "*.gguf", "*.pt")


@dataclass(frozen=True)
class Contestant:
    """One model in the arena. Local: `model` (+ `adapter`) with chat `template`; endpoint: `url` + `api_model`."""

    name: str
    spec: str
    model: str | None = None
    adapter: str | None = None
    template: str = "auto"
    fallback_template: str | None = None  # for a model without a chat template of its own
    url: str | None = None
    api_model: str | None = None

    @property
    def is_endpoint(self) -> bool:
        return self.url is not None

    @property
    def label(self) -> str:
        if self.is_endpoint:
            return f"{self.url} ({self.api_model})"
        return self.model + (f"{ADAPTER_SEP}{self.adapter}" if self.adapter else "")


def _is_adapter_dir(path: Path) -> bool:
    from tuneforge.models.addons import is_adapter_dir

    return path.is_dir() and is_adapter_dir(path) and not (path / "config.json").is_file()


def _adapter_base(adapter: Path) -> str:
    """The base an adapter folder was trained on: its run's record, else PEFT's adapter_config.json."""
    from tuneforge.registry.lineage import find_run_file

    found = find_run_file(adapter)
    if found and found[1].get("base_model"):
        return str(found[1]["base_model"])
    try:
        base = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        base = None
    if not base:
        raise ModelError(f"{adapter} is an adapter folder, but neither a run.json beside it nor its "
                         "adapter_config.json names the base model", hint="write it as --model NAME=BASE::ADAPTER")
    return str(base)


def _default_name(spec: str, c: Contestant) -> str:
    if c.is_endpoint:
        return c.api_model
    path = Path(c.adapter or spec.split(ADAPTER_SEP)[0]).expanduser()
    if path.exists():
        named = path.parent if path.name in ("adapter", "model", "final") else path
        return named.resolve().name
    return spec


def _endpoint(name: str | None, spec: str) -> Contestant:
    url, sep, model = spec[len(ENDPOINT):].partition("#")
    if not url.startswith(("http://", "https://")) or not sep or not model:
        raise ConfigError(f"model {spec!r}: an endpoint is written endpoint:URL#MODEL",
                          hint="e.g. endpoint:http://127.0.0.1:8000/v1#gpt-4o-mini (the URL before "
                               "/chat/completions, then the model name the server expects)")
    return Contestant(name or model, spec, url=url.rstrip("/"), api_model=model)


def parse_contestant(text: str) -> Contestant:
    """`NAME=SPEC` or `SPEC` → Contestant (paths are checked, nothing is loaded)."""
    matched = _NAME.match(text)
    name, spec = (matched.group(1), matched.group(2)) if matched and not Path(text).exists() else (None, text)
    if spec.startswith(ENDPOINT):
        return _endpoint(name, spec)
    model, sep, adapter = spec.partition(ADAPTER_SEP)
    if sep:
        c = Contestant("", spec, model=model, adapter=adapter)
        if not Path(adapter).expanduser().is_dir():
            raise ModelError(f"model {text!r}: the adapter folder {adapter} does not exist")
    elif _is_adapter_dir(Path(spec).expanduser()):
        c = Contestant("", spec, model=_adapter_base(Path(spec).expanduser()), adapter=spec)
    else:
        from tuneforge.models.source import resolve_model

        resolve_model(spec)  # a missing folder or a run without a final model fails here
        c = Contestant("", spec, model=spec)
    return replace(c, name=name or _default_name(spec, c))


def parse_contestants(texts: list[str], templates: list[str] | None = None) -> list[Contestant]:
    """Every `--model`, with the chat templates of `--template NAME=TEMPLATE` (that model's, replacing its own)
    and `--template TEMPLATE` (for every local model that has none of its own). Names must be unique; at least
    two models."""
    models = [parse_contestant(t) for t in texts]
    if len(models) < 2:
        raise ConfigError("an arena needs at least two models", hint="pass --model A --model B [--model C ...]")
    names = [m.name for m in models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"two models are named {dupes[0]!r}", hint="name them: --model NAME=SPEC")
    default, per_model = None, {}
    for t in templates or []:
        name, sep, value = t.partition("=")
        if sep and name in names:
            per_model[name] = value
        elif sep and not Path(t).exists():
            raise ConfigError(f"--template {t}: no model is named {name!r}", hint=f"models: {', '.join(names)}")
        else:
            default = t
    return [m if m.is_endpoint else replace(m, template=per_model.get(m.name, "auto"), fallback_template=default)
            for m in models]


# --- identity --------------------------------------------------------------------------------------------------


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _folder_stamp(folder: str | Path) -> str:
    """Names, sizes and modification times of a folder's weight files: changes when it is trained again."""
    p = Path(folder)
    files = sorted(f for pattern in _WEIGHTS for f in p.glob(pattern)) if p.is_dir() else []
    return _short_hash(json.dumps([[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]))


def _adapter_identity(adapter: str) -> str:
    from tuneforge.models.source import file_sha256

    p = Path(adapter).expanduser()
    files = sorted(f for pattern in _WEIGHTS for f in p.glob(pattern))
    return _short_hash(json.dumps([[f.name, file_sha256(f)] for f in files]))


def settle_template(c: Contestant) -> Contestant:
    """`c` with the chat template it answers with: its --template NAME=..., else "auto" when its tokenizer has a
    template of its own, else the fallback --template; a ConfigError naming the model when there is none."""
    if c.is_endpoint or c.template != "auto":
        return replace(c, fallback_template=None)
    from tuneforge.models.load import load_tokenizer, tokenizer_source

    own = getattr(load_tokenizer(tokenizer_source(c.model, c.adapter)), "chat_template", None)
    if not own and not c.fallback_template:
        raise ConfigError(f"model {c.name} has no chat template of its own",
                          hint=f"give it one: --template {c.name}=chatml, or --template chatml for every model "
                               "without one")
    return replace(c, template="auto" if own else c.fallback_template, fallback_template=None)


def load_checked_tokenizer(c: Contestant):
    """The tokenizer `c` answers with, its chat template set (a settled contestant: see `settle_template`)."""
    from tuneforge.models.load import load_tokenizer, tokenizer_source

    try:
        return load_tokenizer(tokenizer_source(c.model, c.adapter), template=c.template)
    except ConfigError as err:
        raise ConfigError(f"model {c.name}: {err.message}", hint=err.hint) from None


def identity(c: Contestant) -> str:
    """What produced `c`'s answers (see the module docstring); loads a tokenizer, no weights."""
    if c.is_endpoint:
        return f"endpoint:{c.url}#{c.api_model}"
    from tuneforge.models.source import resolve_model

    src = resolve_model(c.model)
    weights = src.identity + (f"|weights:{_folder_stamp(src.path)}" if src.kind == "dir" else "")
    if c.adapter:
        weights += f"+adapter:{_adapter_identity(c.adapter)}"
    template = load_checked_tokenizer(c).chat_template
    return f"{weights}|template:{_short_hash(template)}"


def producing_run_id(c: Contestant) -> str | None:
    """The registry id of the training run `c` came from (an adapter or run folder), for lineage; else None."""
    if c.is_endpoint:
        return None
    from tuneforge.eval.runner import ModelSpec, parent_run

    return parent_run(ModelSpec(c.model, c.adapter))
