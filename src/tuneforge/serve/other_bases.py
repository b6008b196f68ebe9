"""Bases other than the served one (`ServeSettings.other_bases`, on in `tuneforge ui`): a fine-tuning job may name a
model alias, a local folder, a GGUF file or a hub id as its `model`. The job trains on it in its worker like any
job; its fine-tuned model, and that base itself (for the side-by-side chat), are served as their own copies of the
weights (`ModelEntry.base`), never on the shared base.
"""

from __future__ import annotations

from tuneforge.utils.errors import ModelError, TuneforgeError


def resolve_base(name: str) -> str:
    """The path (or hub id) `name` loads from; ModelError with a fix when nothing matches."""
    from tuneforge.models.source import resolve_model

    return resolve_model(name).path


def describe(name: str) -> dict:
    """What the model step shows of a base, without loading its weights: parameters, context length, chat
    template. Raises ModelError when `name` is not a model this machine can read."""
    from tuneforge.models.load import load_tokenizer, tokenizer_source
    from tuneforge.models.memory import read_model_shape
    from tuneforge.models.source import resolve_model
    from tuneforge.serve.catalog import folder_context_length

    source = resolve_model(name)
    shape = read_model_shape(name)
    try:
        tok = load_tokenizer(tokenizer_source(name, None))
        template = bool(getattr(tok, "chat_template", None))
    except (TuneforgeError, OSError, ValueError):
        template = None
    return {"id": name, "kind": source.kind, "parameters": shape.n_params,
            "context_length": folder_context_length(source.path), "chat_template": template}


def suggestions() -> list[str]:
    """Model names the page offers beside a free text field: the built-in aliases this machine can load."""
    from tuneforge.models.source import SMOLLM2_ALIAS, TINY_ALIAS, resolve_model

    out = []
    for name in (SMOLLM2_ALIAS, TINY_ALIAS):
        try:
            resolve_model(name)
        except ModelError:
            continue
        out.append(name)
    return out
