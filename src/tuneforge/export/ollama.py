"""An Ollama Modelfile beside an exported GGUF: FROM the file, a Go TEMPLATE equal to the model's chat template, the
default system prompt the template injects (if any) and the stop strings.

Ollama does not run Jinja templates, so the chat template must be translated. tuneforge translates two families:

- chatml (SmolLM2, Qwen2, tuneforge's `chatml`/`qwen`): `<|im_start|>ROLE\\nTEXT<|im_end|>\\n` per message, then
  `<|im_start|>assistant\\n`;
- llama3 (Llama 3 instruct, tuneforge's `llama3`): `<|start_header_id|>ROLE<|end_header_id|>\\n\\nTEXT<|eot_id|>` per
  message, then the assistant header.

A family is only accepted after proof: the tokenizer's Jinja template is rendered on probe conversations (with and
without a system message, several turns) and must give exactly the text the Ollama template gives under Ollama's
rules (system messages stay in `.Messages`; the Modelfile's SYSTEM is sent as the first message when a chat has
none). A bos token the Jinja template writes as text is left out, since llama.cpp adds bos itself when the GGUF says
`add_bos_token`. Any other template (Llama 3.1's dated system header, Mistral, Gemma, alpaca, custom ones) is refused
with a clear message: the GGUF still carries the Jinja template, which llama.cpp's `--jinja` runs as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tuneforge.utils.errors import ModelError


@dataclass(frozen=True)
class Family:
    name: str
    go_template: str
    turn: Callable[[str, str], str]  # (role, content) → text of one message
    generation_prompt: str


FAMILIES = (
    Family("chatml",
           '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n',
           lambda role, content: f"<|im_start|>{role}\n{content}<|im_end|>\n", "<|im_start|>assistant\n"),
    Family("llama3",
           "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
           "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
           lambda role, content: f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
           "<|start_header_id|>assistant<|end_header_id|>\n\n"),
)

PROBES: list[list[dict]] = [
    [{"role": "user", "content": "Hello there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "How are you?"}],
    [{"role": "user", "content": "First question"}, {"role": "assistant", "content": "First answer"},
     {"role": "user", "content": "Second question"}],
]


@dataclass(frozen=True)
class OllamaTemplate:
    family: Family
    default_system: str | None
    stops: list[str]


def _ollama_render(family: Family, messages: list[dict], default_system: str | None) -> str:
    """What Ollama's prompt is for `messages` under `family`'s template and a Modelfile SYSTEM `default_system`."""
    if default_system is not None and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": default_system}, *messages]
    return "".join(family.turn(m["role"], m["content"]) for m in messages) + family.generation_prompt


def _jinja_render(tok, messages: list[dict]) -> str | None:
    """The tokenizer's prompt text without a leading bos (llama.cpp adds that token); None when it cannot render."""
    try:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template that rejects a probe is simply not this family
        return None
    bos = getattr(tok, "bos_token", None)
    adds_bos = bos is not None and tok("a")["input_ids"][:1] == [tok.bos_token_id]
    if adds_bos and text.startswith(bos):
        return text[len(bos):]
    return None if adds_bos else text  # a template without the bos llama.cpp would add: not equivalent


def _default_system(family: Family, text: str) -> str | None:
    """The system prompt a template writes for a chat that has none (SmolLM2 does), or None."""
    prefix, _, suffix = family.turn("system", "\0").partition("\0")
    if not text.startswith(prefix):
        return None
    end = text.find(suffix, len(prefix))
    return text[len(prefix):end] if end >= 0 else None


def match_template(tok) -> OllamaTemplate:
    """The Ollama family whose template renders exactly like the tokenizer's, or a ModelError naming the families."""
    from tuneforge.data.templates import template_stop_strings

    if not getattr(tok, "chat_template", None):
        raise ModelError("--ollama: the model has no chat template, so Ollama would send raw text",
                         hint="export with --template NAME (the template the model was trained with)")
    first = _jinja_render(tok, PROBES[0])
    for family in FAMILIES:
        default = _default_system(family, first) if first is not None else None
        if all(_jinja_render(tok, p) == _ollama_render(family, p, default) for p in PROBES):
            return OllamaTemplate(family, default, template_stop_strings(tok))
    names = ", ".join(f.name for f in FAMILIES)
    raise ModelError(f"--ollama: the model's chat template is not one tuneforge can translate to an Ollama "
                     f"template exactly (supported: {names})",
                     hint="the GGUF still carries the Jinja template (tokenizer.chat_template; llama.cpp --jinja "
                          "uses it): export without --ollama and write the Modelfile TEMPLATE by hand")


def _quoted(text: str) -> str:
    if '"""' in text:
        raise ModelError('--ollama: the template or system prompt contains """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def modelfile_text(gguf_name: str, t: OllamaTemplate) -> str:
    """The Modelfile, with FROM relative to its own folder (Ollama resolves it there)."""
    lines = [f"# Ollama Modelfile written by tuneforge ({t.family.name} chat template).",
             f"# ollama create NAME -f {Path(gguf_name).stem}.Modelfile",
             f"FROM ./{gguf_name}", f"TEMPLATE {_quoted(t.family.go_template)}"]
    if t.default_system is not None:
        lines.append(f"SYSTEM {_quoted(t.default_system)}")
    for stop in t.stops:
        if '"' in stop or "\n" in stop:
            raise ModelError(f"--ollama: the stop string {stop!r} cannot be written as a Modelfile PARAMETER")
        lines.append(f'PARAMETER stop "{stop}"')
    return "\n".join(lines) + "\n"
