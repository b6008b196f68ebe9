"""The loaded models behind the model ids.

The base is loaded once, at start, and never reloaded. LoRA adapters are loaded onto that same base on first use
(PEFT's multi-adapter model: each is a few small matrices beside the base weights) and kept in an LRU of
`max_adapters`; switching between them is a flag flip, not a load. Models that cannot share the base weights (full
fine-tunes, and adapters other than LoRA: IA3, prompt/prefix tuning, tuneforge's bottleneck and UniPELT) get their
own copy of the weights, loaded on first use and kept in a second LRU of `max_copies`. Loaded models are keyed by
their catalog entry (id, folder, finish time), so a run trained again under the same id is loaded afresh.

Concurrency: generation is serialized per set of weights, never interleaved. The base and its LoRA adapters share
one lock, because activating an adapter changes the shared model for everyone; a model with its own weights has its
own lock. Requests wait for the lock of the weights they need (no batching yet: a later optimisation, for which
PEFT's per-row `adapter_names` would let one batch mix adapters).
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tuneforge.data.templates import encode_prompt, ensure_chat_template, uses_tools
from tuneforge.infer.engine import Engine, encode_text
from tuneforge.models.load import load_for_inference, load_tokenizer, tokenizer_source
from tuneforge.serve.catalog import ModelEntry
from tuneforge.serve.settings import ServeSettings

_REQUEST_TOKENIZERS = 64  # request-side tokenizer copies kept (a few MB each)


def _fallback_template(tok, template: str) -> None:
    """Keep the template a model or adapter carries (its training's); else use the server's --template, if named."""
    if not getattr(tok, "chat_template", None) and template != "auto":
        ensure_chat_template(tok, template)


def context_length(model) -> int | None:
    """The longest sequence the model was built for (prompt + completion), when its config says."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


@dataclass
class RequestView:
    """What a request needs before it generates: a private copy of its model's tokenizer, to render and count the
    prompt while another request is generating (fast tokenizers must not be used from two threads at once), and
    the model's context length."""

    tokenizer: object
    context: int | None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def chat_ids(self, messages: list[dict], tools: list[dict] | None) -> list[int]:
        """The prompt ids `Engine.generate` / `stream` will generate from (the same chat template rendering)."""
        with self.lock:
            return encode_prompt(self.tokenizer, messages, tools)

    def text_ids(self, prompt: str) -> list[int]:
        """The prompt ids `Engine.complete` / `stream_complete` will generate from."""
        with self.lock:
            return encode_text(self.tokenizer, prompt)

    def renders_tools(self) -> bool:
        return uses_tools(self.tokenizer)


class _SharedBase:
    """The base model with LoRA adapters loaded onto it. Every method is called with `lock` held."""

    def __init__(self, engine: Engine, max_adapters: int):
        self.lock = threading.Lock()
        self.base_engine = engine
        self._model = engine.model  # PEFT injects the LoRA layers into this very model
        self._peft = None  # the PeftModel around it, once an adapter is loaded
        self._loaded: OrderedDict[ModelEntry, tuple[str, Engine]] = OrderedDict()  # → (PEFT name, engine)
        self._max = max_adapters
        self._names = (f"tf{i}" for i in itertools.count())  # PEFT names must not hold '.', model ids may
        self._active: str | None = None  # the active PEFT adapter; None: the base alone

    def engine_for(self, entry: ModelEntry, tokenizer) -> Engine:
        """The engine answering `entry`, with its adapter (or none, for the base) active on the shared model."""
        if entry.kind == "base":
            self._activate(None)
            return self.base_engine
        if entry not in self._loaded:
            self._load(entry, tokenizer())
        self._loaded.move_to_end(entry)
        name, engine = self._loaded[entry]
        self._activate(name)
        return engine

    def _load(self, entry: ModelEntry, tok) -> None:
        from peft import PeftModel

        name = next(self._names)
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self._model, entry.root, adapter_name=name)
        else:
            self._peft.load_adapter(entry.root, adapter_name=name)
        self._peft.eval()
        self._peft.set_adapter(name, inference_mode=True)  # so an unloaded one below is never the active one
        self._active = "?"  # the layers may be enabled or not: set them again before the next generation
        self._loaded[entry] = (name, Engine(self._model, tok))
        while len(self._loaded) > self._max:  # the new adapter is in, so the PEFT model never goes empty
            _, (old, _) = self._loaded.popitem(last=False)
            self._peft.delete_adapter(old)

    def _activate(self, name: str | None) -> None:
        if name == self._active or self._peft is None:
            return
        if name is None:
            self._peft.base_model.disable_adapter_layers()
        else:
            self._peft.set_adapter(name, inference_mode=True)
            self._peft.base_model.enable_adapter_layers()
        self._active = name

    def loaded(self) -> list[str]:
        return [e.id for e in self._loaded]


@dataclass
class _Copy:
    engine: Engine
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelPool:
    """Engines for catalog entries, loaded on first use; `lease` hands one out for exactly one generation."""

    def __init__(self, settings: ServeSettings):
        """Loads the base now, so a bad --model fails at start rather than on the first request."""
        self.settings = settings
        base = Engine.load(settings.model, template=settings.template, dtype=settings.dtype, device=settings.device)
        self._shared = _SharedBase(base, settings.max_adapters)
        self._copies: OrderedDict[ModelEntry, _Copy] = OrderedDict()
        self._copies_lock = threading.Lock()
        self._views: OrderedDict[ModelEntry, RequestView] = OrderedDict()
        self._views_lock = threading.Lock()

    @property
    def base(self) -> Engine:
        return self._shared.base_engine

    @contextmanager
    def lease(self, entry: ModelEntry) -> Iterator[Engine]:
        """`entry`'s engine, loaded if needed, for one generation: no other request uses its weights until the
        block ends."""
        if entry.kind == "base" or (entry.lora and entry.base is None):
            with self._shared.lock:
                yield self._shared.engine_for(entry, lambda: self._adapter_tokenizer(entry))
        else:
            own = self._copy(entry)
            with own.lock:
                yield own.engine

    def prepare(self, entry: ModelEntry) -> RequestView:
        """Load `entry` (a load failure answers the request before any stream starts) and return its view."""
        with self._views_lock:
            view = self._views.get(entry)
            if view is not None:
                self._views.move_to_end(entry)
        if view is None:
            with self.lease(entry) as engine:
                view = RequestView(copy.deepcopy(engine.tokenizer), context_length(engine.model))
            with self._views_lock:
                self._views[entry] = view
                while len(self._views) > _REQUEST_TOKENIZERS:
                    self._views.popitem(last=False)
        return view

    def loaded(self) -> dict[str, list[str]]:
        """Model ids with weights in memory now (for logs and tests)."""
        with self._copies_lock:
            copies = [e.id for e in self._copies]
        return {"adapters": self._shared.loaded(), "copies": copies}

    def _adapter_tokenizer(self, entry: ModelEntry):
        """The adapter's own tokenizer and template when its training saved them beside it, else the base's."""
        tok = load_tokenizer(tokenizer_source(self.settings.model, entry.root))
        _fallback_template(tok, self.settings.template)
        return tok

    def _copy(self, entry: ModelEntry) -> _Copy:
        with self._copies_lock:
            own = self._copies.get(entry)
            if own is None:
                own = self._copies[entry] = _Copy(self._load_copy(entry))
                while len(self._copies) > self.settings.max_copies:
                    self._copies.popitem(last=False)  # freed once no request holds it
            self._copies.move_to_end(entry)
            return own

    def _load_copy(self, entry: ModelEntry) -> Engine:
        s = self.settings
        if entry.kind == "model":
            model, tok = load_for_inference(entry.root, dtype=s.dtype, device=s.device)
        else:
            model, tok = load_for_inference(entry.base or s.model, entry.root, dtype=s.dtype, device=s.device)
        _fallback_template(tok, s.template)
        return Engine(model, tok)
