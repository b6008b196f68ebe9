"""Chat templates: the tokenizer's own first, else a named family template stored as a small data entry.

The tokenizer's `chat_template` is the single source of truth for training (`data.render`), inference (`infer`) and
export: `ensure_chat_template` puts the chosen template there, and everything else reads it back from the tokenizer.

Named templates render system / user / assistant / tool multi-turn conversations, support `add_generation_prompt`,
and end every assistant turn with the family's end-of-turn marker (plus eos where the family does), so a model
trained on them learns to stop. Given `tools=[schema, ...]` they list the schemas as JSON in the system part (merged
into the first user turn where the family has no system turn) with a one-line instruction to answer a call as JSON
{"name", "arguments"}; an assistant turn's `tool_calls` are rendered in exactly that JSON, and tool results in the
family's tool turn (or a user turn starting "Tool result:" where it has none). They start with the tokenizer's bos
token exactly when the tokenizer adds bos to plain text, so prompts look like what the model saw in pretraining.
Templates that use markers the tokenizer does not know as single tokens (e.g. chatml on a tokenizer without
`<|im_start|>`) still work: the markers are spelled out in ordinary tokens and generation stops on the marker text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from tuneforge.utils.errors import ConfigError

# End-of-turn markers of well-known families, looked for in a tokenizer's own template to know where to stop.
KNOWN_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|eot|>", "<|endoftext|>",
                     "<|end_of_text|>", "</s>", "<|END_OF_TURN_TOKEN|>", "<|return|>")

_HEADER = "{#- tuneforge template: %s -#}\n"
_HEADER_RE = re.compile(r"^\{#- tuneforge template: ([a-z0-9_]+) -#\}")

# Shared start of every named template: split off the system message, decide on bos, append the tool schemas (if
# any) and how to call them to the system part, and define `turn_text(m)`: a turn's text, with an assistant's
# `tool_calls` spelled as the JSON {"name", "arguments"} that the tool instruction asks for. The two `set` lines with
# literals are filled in by `ensure_chat_template` (default system prompt, whether this tokenizer adds bos).
_PRELUDE = """{%- set default_system = @DEFAULT_SYSTEM@ -%}
{%- set add_bos = @ADD_BOS@ -%}
{%- set bos = bos_token if (add_bos and bos_token) else '' -%}
{%- if messages and messages[0]['role'] == 'system' -%}
  {%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}
{%- else -%}
  {%- set system = default_system -%}{%- set turns = messages -%}
{%- endif -%}
{%- if tools -%}
  {%- set tool_block = 'You can call these tools:\\n' + (tools | map('tojson') | join('\\n')) + '\\n\\nTo call a '
      + 'tool, answer with only a JSON object {"name": <tool name>, "arguments": <arguments object>} (a JSON list '
      + 'of such objects for several calls); each result comes back in the next turn.' -%}
  {%- set system = (system + '\\n\\n' + tool_block) if system else tool_block -%}
{%- endif -%}
{%- macro turn_text(m) -%}
  {%- set content = m['content'] if m['content'] is string else '' -%}
  {%- if m['role'] == 'assistant' and m['tool_calls'] -%}
    {%- set ns = namespace(calls=[]) -%}
    {%- for c in m['tool_calls'] -%}
      {%- set f = c['function'] if c['function'] is defined else c -%}
      {%- set args = f['arguments'] if f['arguments'] is defined else {} -%}
      {%- set args = args if args is string else args | tojson -%}
      {%- set ns.calls = ns.calls + ['{"name": ' + (f['name'] | tojson) + ', "arguments": ' + args + '}'] -%}
    {%- endfor -%}
    {{- content + ('\\n' if content else '')
        + (ns.calls[0] if ns.calls | length == 1 else '[' + ns.calls | join(', ') + ']') -}}
  {%- else -%}{{- content -}}{%- endif -%}
{%- endmacro -%}
"""

_ROLE_CHECK = """{%- if m['role'] not in ('user', 'assistant', 'tool') -%}
    {{- raise_exception('this chat template supports roles system (first message only), user, assistant and tool; '
                        + 'got ' + m['role']) -}}
  {%- endif -%}
"""

# Templates without a tool role show a tool result as a user turn that starts with this label.
_AS_USER = """{%- set content = ('Tool result:\\n' if m['role'] == 'tool' else '') + turn_text(m) -%}"""

_ALPACA = """{{- bos -}}
{%- if system -%}{{- system + '\\n\\n' -}}{%- endif -%}
{%- for m in turns -%}
  """ + _ROLE_CHECK + """  {%- if m['role'] == 'assistant' -%}{{- '### Response:\\n' + turn_text(m) + eos_token + '\\n\\n' -}}
  {%- elif m['role'] == 'tool' -%}{{- '### Observation:\\n' + turn_text(m) + '\\n\\n' -}}
  {%- else -%}{{- '### Instruction:\\n' + turn_text(m) + '\\n\\n' -}}{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '### Response:\\n' -}}{%- endif -%}"""

_CHATML = """{{- bos -}}
{%- if system -%}{{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' -}}{%- endif -%}
{%- for m in turns -%}
  {{- '<|im_start|>' + m['role'] + '\\n' + turn_text(m) + '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"""

_LLAMA3 = """{{- bos -}}
{%- if system -%}{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + system + '<|eot_id|>' -}}{%- endif -%}
{%- for m in turns -%}
  """ + _ROLE_CHECK + """  {{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + turn_text(m) + '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"""

_LLAMA2 = """{%- for m in turns -%}
  """ + _ROLE_CHECK + """  {%- if m['role'] == 'assistant' -%}{{- ' ' + turn_text(m) + ' ' + eos_token -}}
  {%- else -%}
    """ + _AS_USER + """
    {%- if loop.first and system -%}{%- set content = '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + content -%}{%- endif -%}
    {{- bos + '[INST] ' + content + ' [/INST]' -}}
  {%- endif -%}
{%- endfor -%}"""

_MISTRAL = """{{- bos -}}
{%- for m in turns -%}
  """ + _ROLE_CHECK + """  {%- if m['role'] == 'assistant' -%}{{- turn_text(m) + eos_token -}}
  {%- else -%}
    """ + _AS_USER + """
    {%- if loop.first and system -%}{%- set content = system + '\\n\\n' + content -%}{%- endif -%}
    {{- '[INST] ' + content + ' [/INST]' -}}
  {%- endif -%}
{%- endfor -%}"""

_GEMMA = """{{- bos -}}
{%- for m in turns -%}
  """ + _ROLE_CHECK + """  """ + _AS_USER + """
  {%- if loop.first and system -%}{%- set content = system + '\\n\\n' + content -%}{%- endif -%}
  {%- set role = 'model' if m['role'] == 'assistant' else 'user' -%}
  {{- '<start_of_turn>' + role + '\\n' + content + '<end_of_turn>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"""

_PHI = """{{- bos -}}
{%- if system -%}{{- '<|system|>\\n' + system + '<|end|>\\n' -}}{%- endif -%}
{%- for m in turns -%}
  """ + _ROLE_CHECK + """  {{- '<|' + m['role'] + '|>\\n' + turn_text(m) + '<|end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"""


@dataclass(frozen=True)
class TemplateSpec:
    """A named chat template: Jinja body (after the shared prelude), end-of-turn stop strings, default system."""

    body: str
    stops: tuple[str, ...]  # besides the tokenizer's eos, which always stops
    description: str
    default_system: str | None = None
    aliases: tuple[str, ...] = field(default=())


TEMPLATES: dict[str, TemplateSpec] = {
    "alpaca": TemplateSpec(_ALPACA, ("### Instruction:",), "### Instruction: / ### Response:, answer ends with eos",
                           aliases=("default",)),
    "chatml": TemplateSpec(_CHATML, ("<|im_end|>",), "<|im_start|>role … <|im_end|> (ChatML, Qwen/SmolLM style)"),
    "qwen": TemplateSpec(_CHATML, ("<|im_end|>",), "chatml with the default system 'You are a helpful assistant.'",
                         default_system="You are a helpful assistant."),
    "llama3": TemplateSpec(_LLAMA3, ("<|eot_id|>",), "<|start_header_id|>role<|end_header_id|> … <|eot_id|>"),
    "llama2": TemplateSpec(_LLAMA2, (), "<s>[INST] <<SYS>> … <</SYS>> … [/INST] answer </s>"),
    "mistral": TemplateSpec(_MISTRAL, (), "[INST] … [/INST]answer</s>; system merged into the first user turn"),
    "gemma": TemplateSpec(_GEMMA, ("<end_of_turn>",),
                          "<start_of_turn>user/model … <end_of_turn>; system merged into the first user turn"),
    "phi": TemplateSpec(_PHI, ("<|end|>",), "Phi-3 style <|user|> … <|end|> <|assistant|> … <|end|>"),
}
_ALIASES = {alias: name for name, spec in TEMPLATES.items() for alias in spec.aliases}


def list_templates() -> list[str]:
    """Names accepted by `ensure_chat_template` besides 'auto' (aliases included), sorted."""
    return sorted([*TEMPLATES, *_ALIASES])


def _jinja_literal(value: str | None) -> str:
    # JSON string escapes (\\n, \\uXXXX, \\") are also valid Jinja string-literal escapes.
    return "none" if value is None else json.dumps(value)


def _adds_bos(tokenizer) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def build_template(name: str, tokenizer=None, *, default_system: str | None = None) -> str:
    """The Jinja text of named template `name` for `tokenizer` (bos decision), with an optional default system."""
    canonical = _ALIASES.get(name, name)
    if canonical not in TEMPLATES:
        raise ConfigError(f"unknown chat template '{name}'",
                          hint=f"use 'auto' (the model's own) or one of {', '.join(list_templates())}, "
                               "or a path to a .jinja file")
    spec = TEMPLATES[canonical]
    system = default_system if default_system is not None else spec.default_system
    prelude = (_PRELUDE.replace("@DEFAULT_SYSTEM@", _jinja_literal(system))
               .replace("@ADD_BOS@", "true" if tokenizer is not None and _adds_bos(tokenizer) else "false"))
    return _HEADER % canonical + prelude + spec.body


def template_name(tokenizer) -> str | None:
    """The named template the tokenizer carries ('chatml', …), or None for its own / a custom / no template."""
    m = _HEADER_RE.match(getattr(tokenizer, "chat_template", None) or "")
    return m.group(1) if m else None


def ensure_chat_template(tokenizer, name: str = "auto", *, default_system: str | None = None) -> str:
    """Set `tokenizer.chat_template` and return it.

    `auto` keeps the tokenizer's own template (also one saved beside an adapter by a tuneforge run) and raises
    ConfigError when there is none, listing the named ones. Any other `name` replaces the tokenizer's template with
    that named family template (see `list_templates()`), or with the text of a `.jinja` file when `name` is a path.
    `default_system` is baked into a named template as the system prompt used when a conversation has none.
    """
    if name == "auto":
        own = getattr(tokenizer, "chat_template", None)
        if not own:
            raise ConfigError(
                f"the model's tokenizer ({getattr(tokenizer, 'name_or_path', '?')}) has no chat template",
                hint=f"pick one with template=NAME (--template NAME): {', '.join(list_templates())}; "
                     "base models are usually fine-tuned with 'default' (alpaca) or 'chatml'")
        if default_system is not None:
            raise ConfigError("default_system only applies to named templates, not to the model's own ('auto')",
                              hint="put a system message in the conversation instead")
        return own
    if name.endswith(".jinja"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"chat template file {path} does not exist")
        tokenizer.chat_template = path.read_text(encoding="utf-8")
        return tokenizer.chat_template
    tokenizer.chat_template = build_template(name, tokenizer, default_system=default_system)
    return tokenizer.chat_template


def _require_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        ensure_chat_template(tokenizer, "auto")  # raises the explanatory error


def render_prompt(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> str:
    """The generation prompt for `messages` (the conversation so far, ending with a user turn), as text.

    `tools` are tool schemas the model may call. Tokenize the result with `add_special_tokens=False` (or use
    `encode_prompt`): the template already holds bos where needed.
    """
    _require_template(tokenizer)
    kwargs = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)


def encode_prompt(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
    """Token ids of `render_prompt(...)`; equal to `apply_chat_template(..., add_generation_prompt=True)` ids."""
    return list(tokenizer(render_prompt(tokenizer, messages, tools), add_special_tokens=False)["input_ids"])


@lru_cache(maxsize=32)
def _mentions(template: str, name: str) -> bool:
    return bool(re.search(rf"\b{name}\b", template))


def uses_tools(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders the `tools` it is given (named templates all do)."""
    return _mentions(str(getattr(tokenizer, "chat_template", None) or ""), "tools")


def uses_tool_calls(tokenizer) -> bool:
    """Whether the template reads an assistant message's structured `tool_calls` (else calls travel as content)."""
    return _mentions(str(getattr(tokenizer, "chat_template", None) or ""), "tool_calls")


def template_stop_strings(tokenizer) -> list[str]:
    """Texts that end an assistant turn under the tokenizer's template: its end-of-turn marker(s) and eos.

    For a named template these come from its entry; for a model's own template, every well-known end marker that
    occurs in the template text. Generation stops at the first of them and the text is cut before it.
    """
    name = template_name(tokenizer)
    template = getattr(tokenizer, "chat_template", None) or ""
    if name:
        stops = list(TEMPLATES[name].stops)
    else:
        stops = [m for m in KNOWN_END_MARKERS if m in template]
    eos = getattr(tokenizer, "eos_token", None)
    if eos:
        stops.append(eos)
    return list(dict.fromkeys(stops))


def single_token_id(tokenizer, text: str) -> int | None:
    """The id of `text` when the tokenizer encodes it as exactly one token, else None."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def template_stop_token_ids(tokenizer) -> list[int]:
    """Ids that end generation: eos plus each stop string that is a single token for this tokenizer.

    Stop strings spelled with several tokens (e.g. '### Instruction:') must be matched on text; see
    `template_stop_strings`.
    """
    ids = [tokenizer.eos_token_id] if getattr(tokenizer, "eos_token_id", None) is not None else []
    for s in template_stop_strings(tokenizer):
        tid = single_token_id(tokenizer, s)
        if tid is not None:
            ids.append(tid)
    return list(dict.fromkeys(ids))
