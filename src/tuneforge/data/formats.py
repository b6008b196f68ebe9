"""Convert raw rows (alpaca, sharegpt, OpenAI messages, plain text, preference pairs, KTO) into canonical Records.

Column names and sharegpt role tags follow LLaMA-Factory's `dataset_info.json` (`columns`, `tags`), so its
registries work unchanged. `resolve_format` decides once per dataset (from the first row when `format="auto"`);
`to_record` converts and validates each row, raising DataError with file, line and field.

Choices worth knowing:
- alpaca: the user turn is `prompt` and `query` joined by "\n" (empty parts dropped), as in LLaMA-Factory; `history`
  is a list of [user, assistant] pairs placed before it; an empty `system` adds no system message.
- sharegpt: after an optional leading system message, user/observation and assistant/function_call turns alternate
  (LLaMA-Factory's rule); roles become user / assistant / system / function_call / observation.
- openai: roles system (or developer) / user / assistant / tool; assistant `tool_calls` become a `function_call`
  turn whose content is the JSON call(s) `{"name", "arguments"}`; consecutive `tool` results are allowed.
- Preference rows keep the prompt in `messages` and the answers in `chosen` / `rejected` (one message each).
- KTO rows keep the whole conversation in `messages` and the desirability in `label`.
- `tools` (a JSON string as in LLaMA-Factory, a list, or one schema object) becomes a list of tool schemas.
- Columns not consumed go to `Record.extra` untouched.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field

from tuneforge.data.records import Record
from tuneforge.utils.errors import DataError

FORMATS = ("auto", "alpaca", "sharegpt", "openai", "text", "pairwise", "kto")
KINDS = ("alpaca", "sharegpt", "openai", "text")
COLUMN_KEYS = ("prompt", "query", "response", "history", "messages", "system", "tools", "chosen", "rejected",
               "kto_tag", "text", "images", "videos", "audios")
TAG_KEYS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")
DEFAULT_COLUMNS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "history": "history",
               "system": "system", "tools": "tools", "chosen": "chosen", "rejected": "rejected", "kto_tag": "label"},
    "sharegpt": {"messages": "conversations", "system": "system", "tools": "tools", "chosen": "chosen",
                 "rejected": "rejected", "kto_tag": "label"},
    "openai": {"messages": "messages", "tools": "tools", "chosen": "chosen", "rejected": "rejected",
               "kto_tag": "label"},
    "text": {"text": "text"},
}
DEFAULT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
_MULTIMODAL = ("images", "videos", "audios")


@dataclass
class FormatSpec:
    """How every row of one dataset is read: base kind, preference / KTO flags and the full column and tag maps."""

    kind: str
    ranking: bool = False
    kto: bool = False
    columns: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    prompts: bool = False  # rows without an answer are prompts (RL stages), not errors

    @property
    def name(self) -> str:
        return self.kind + ("+pairwise" if self.ranking else "") + ("+kto" if self.kto else "")


def _check_keys(given: dict | None, allowed: tuple, what: str) -> dict:
    given = dict(given or {})
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
            raise DataError(f"unknown {what} key '{key}'", field=f"{what}.{key}", hint=hint)
    return given


def resolve_format(fmt: str, first_row: dict | None, *, columns: dict | None = None, tags: dict | None = None,
                   ranking: bool | None = None, kto: bool | None = None, prompts: bool = False) -> FormatSpec:
    """Decide how to read a dataset: `fmt` is one of FORMATS; `auto` parts are detected from the first row's keys.

    `ranking` / `kto` (from a registry entry) override detection. Column and tag overrides use LLaMA-Factory keys.
    `prompts`: the stage trains on prompts, so a row without an answer is a prompt (TRL's `{"prompt": ...}` rows too).
    """
    if fmt not in FORMATS:
        close = difflib.get_close_matches(fmt, FORMATS, n=1)
        raise DataError(f"unknown data format '{fmt}'", field="format",
                        hint=f"did you mean '{close[0]}'?" if close else f"choose one of {', '.join(FORMATS)}")
    columns = _check_keys(columns, COLUMN_KEYS, "columns")
    tags = _check_keys(tags, TAG_KEYS, "tags")
    media = [k for k in _MULTIMODAL if k in columns]
    if media:
        raise DataError(f"multimodal datasets are not supported (columns: {', '.join(media)})", field="columns",
                        hint="tuneforge trains text-only models; drop the media columns to train on the text alone")
    row = first_row or {}
    kind = fmt if fmt in KINDS else _detect_kind(row, columns, tags, prompts)
    if kind == "text" and "prompt" in columns and "text" not in columns:
        columns["text"] = columns.pop("prompt")  # LLaMA-Factory names the pre-training text column `prompt`
    cols = {**DEFAULT_COLUMNS[kind], **columns}
    if kind == "openai" and prompts and cols["messages"] not in row and isinstance(row.get("prompt"), list):
        cols["messages"] = "prompt"  # TRL's conversational prompt-only rows: {"prompt": [messages]}
    if kind == "openai" and cols["messages"] not in row and "input" in row and "preferred_output" in row:
        # OpenAI's preference fine-tuning layout: {"input": {"messages": [...]}, "preferred_output": [...], ...}
        cols.update(messages="input", chosen="preferred_output", rejected="non_preferred_output")
    if ranking is None:
        ranking = fmt == "pairwise" or (kind != "text" and cols["chosen"] in row and cols["rejected"] in row)
    if kto is None:
        kto = fmt == "kto" or (kind != "text" and isinstance(row.get(cols["kto_tag"]), bool))
    if ranking and kto:
        raise DataError("a dataset cannot be both preference pairs and KTO", field="format",
                        hint="set format: pairwise or format: kto")
    if kind == "text" and (ranking or kto):
        raise DataError("plain-text data has no answers to rank or label", field="format")
    tag_map = {**DEFAULT_TAGS, **tags} if kind == "sharegpt" else {}
    return FormatSpec(kind, bool(ranking), bool(kto), cols, tag_map, prompts and not (ranking or kto))


def _detect_kind(row: dict, columns: dict, tags: dict, prompts: bool = False) -> str:
    if "messages" in columns or "conversations" in row or "messages" in row:
        col = columns.get("messages") or ("conversations" if "conversations" in row else "messages")
        msgs = row.get(col)
        if tags:
            return "sharegpt"  # role tags only mean something for sharegpt
        first = msgs[0] if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict) else {}
        if not first:  # nothing to look at: go by the column name's usual format
            return "openai" if col == "messages" else "sharegpt"
        return "openai" if "role" in first and "from" not in first else "sharegpt"
    if isinstance(row.get("input"), dict) and "preferred_output" in row:
        return "openai"
    answer_keys = {"query", "response", "history", "chosen", "rejected", "kto_tag"}
    if "prompt" in columns and not answer_keys & set(columns) and "output" not in row:
        return "text"  # LLaMA-Factory pre-training entries map only `prompt` (e.g. wiki_demo, c4_demo)
    if {"prompt", "query", "response", "history"} & set(columns) or "instruction" in row or "output" in row:
        return "alpaca"
    if "prompt" in row and ("completion" in row or "chosen" in row or prompts):
        # TRL prompt/completion, prompt/chosen/rejected and prompt-only layouts (a list of messages: conversational)
        return "openai" if prompts and isinstance(row["prompt"], list) else "alpaca"
    if "text" in row or "text" in columns:
        return "text"
    raise DataError(f"cannot detect the data format from columns {sorted(row)}", field="format",
                    hint="set format: alpaca|sharegpt|openai|text (and columns: to map your column names)")


def _prepare(spec: FormatSpec, row: dict) -> FormatSpec:
    """Per-row tweak: TRL's prompt/completion rows use `prompt`/`completion` unless columns were mapped explicitly."""
    c = spec.columns
    if spec.kind == "alpaca" and c["prompt"] == "instruction" and c["prompt"] not in row and "prompt" in row:
        cols = {**c, "prompt": "prompt", "query": "input",
                "response": "completion" if "completion" in row else c["response"]}
        return FormatSpec(spec.kind, spec.ranking, spec.kto, cols, spec.tags, spec.prompts)
    return spec


def to_record(row: dict, spec: FormatSpec, *, file: str, line: int | None) -> Record:
    """Convert one raw row into a Record; raises DataError naming file, line and field when the row is invalid."""
    spec = _prepare(spec, row)
    ctx = _Ctx(row, file, line)
    if spec.kind == "text":
        rec = _text(ctx, spec)
    elif spec.kind == "alpaca":
        rec = _alpaca(ctx, spec)
    else:
        rec = _chat(ctx, spec)
    if spec.kto:
        rec.label = _label(ctx, spec.columns["kto_tag"])
    rec.source = f"{file}:{line}" if line is not None else file
    rec.extra = {k: v for k, v in row.items() if k not in ctx.used}
    return rec


class _Ctx:
    """Row plus location; remembers consumed columns so the rest can go to Record.extra."""

    def __init__(self, row: dict, file: str, line: int | None):
        self.row, self.file, self.line, self.used = row, file, line, set()

    def err(self, msg: str, fld: str | None, hint: str | None = None) -> DataError:
        return DataError(msg, file=self.file, line=self.line, field=fld, hint=hint)

    def get(self, col: str, types: tuple, *, required: bool = False, what: str = ""):
        """Value of column `col` (None when absent or null); wrong types and missing required columns raise."""
        if col not in self.row or self.row[col] is None:
            if required:
                have = ", ".join(sorted(self.row)) or "none"
                raise self.err("missing required field", col, f"row has columns: {have}; map yours with columns:")
            return None
        self.used.add(col)
        value = self.row[col]
        if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
            names = " or ".join(t.__name__ for t in types)
            raise self.err(f"wrong type: expected {what or names}, got {type(value).__name__}", col)
        return value


def _text(ctx: _Ctx, spec: FormatSpec) -> Record:
    col = spec.columns["text"]
    text = ctx.get(col, (str,), required=True, what="a string")
    if not text.strip():
        raise ctx.err("empty text", col)
    return Record(text=text)


def _alpaca(ctx: _Ctx, spec: FormatSpec) -> Record:
    c = spec.columns
    if c["prompt"] not in ctx.row and c["query"] not in ctx.row:
        ctx.get(c["prompt"], (str,), required=True)
    prompt = ctx.get(c["prompt"], (str,)) or ""
    query = ctx.get(c["query"], (str,)) or ""
    if not prompt.strip() and not query.strip():
        raise ctx.err(f"empty '{c['prompt']}' and '{c['query']}'", c["prompt"])
    messages = []
    system = ctx.get(c["system"], (str,))
    if system and system.strip():
        messages.append({"role": "system", "content": system})
    for i, pair in enumerate(ctx.get(c["history"], (list,), what="a list of [user, assistant] pairs") or []):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise ctx.err("wrong type: expected a [user, assistant] pair of strings", f"{c['history']}[{i}]")
        if not pair[1].strip():
            raise ctx.err("empty assistant answer", f"{c['history']}[{i}]")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    messages.append({"role": "user", "content": "\n".join(p for p in (prompt, query) if p)})
    rec = Record(messages=messages, tools=_tools(ctx, c["tools"]))
    if spec.ranking:
        rec.chosen = [_answer(ctx, c["chosen"])]
        rec.rejected = [_answer(ctx, c["rejected"])]
    elif not (spec.prompts and not (ctx.get(c["response"], (str,)) or "").strip()):
        messages.append(_answer(ctx, c["response"]))
    return rec


def _answer(ctx: _Ctx, col: str) -> dict:
    value = ctx.get(col, (str,), required=True, what="a string")
    if not value.strip():
        raise ctx.err("empty assistant answer", col)
    return {"role": "assistant", "content": value}


def _tools(ctx: _Ctx, col: str) -> list[dict] | None:
    """Tool schemas as a list of dicts: from a JSON string (LLaMA-Factory), a list, or one schema object."""
    value = ctx.get(col, (str, list, dict), what="a JSON string or list of tool schemas")
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ctx.err(f"not valid JSON ({e.msg} at character {e.pos})", col,
                          "tools must be a JSON list of tool schemas, e.g. "
                          '[{"name": "get_weather", "description": "...", "parameters": {...}}]') from None
        if not isinstance(value, (list, dict)):
            raise ctx.err(f"wrong type: expected a list of tool schemas, got JSON {type(value).__name__}", col)
    tools = [value] if isinstance(value, dict) else value
    for i, tool in enumerate(tools or []):
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if not (isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"].strip()):
            raise ctx.err("a tool schema must be an object with a 'name' (or 'function': {'name': ...})",
                          f"{col}[{i}]")
    return tools or None


def _label(ctx: _Ctx, col: str) -> bool:
    value = ctx.get(col, (bool, int, str), required=True, what="a boolean (true = desirable)")
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0"):
            raise ctx.err(f"wrong value '{value}': expected true or false", col)
        return value.strip().lower() in ("true", "1")
    if not isinstance(value, bool) and value not in (0, 1):
        raise ctx.err(f"wrong value {value}: expected true or false", col)
    return bool(value)


def _chat(ctx: _Ctx, spec: FormatSpec) -> Record:
    c = spec.columns
    col = c["messages"]
    raw = ctx.get(col, (list, dict), required=True, what="a list of messages")
    if isinstance(raw, dict):  # OpenAI preference rows wrap the prompt: {"input": {"messages": [...]}}
        raw = raw.get("messages")
        if not isinstance(raw, list):
            raise ctx.err("wrong type: expected {'messages': [...]}", col)
    read = _sharegpt_message if spec.kind == "sharegpt" else _openai_message
    messages = [read(ctx, spec, m, f"{col}[{i}]") for i, m in enumerate(raw)]
    check_order(messages, ranking=spec.ranking, prompts=spec.prompts,
                err=lambda msg, i: ctx.err(msg, f"{col}[{i}]" if i >= 0 else col))
    if spec.kind == "sharegpt" and not (messages and messages[0]["role"] == "system"):
        system = ctx.get(c["system"], (str,))
        if system and system.strip():
            messages.insert(0, {"role": "system", "content": system})
    rec = Record(messages=messages, tools=_tools(ctx, c["tools"]))
    if spec.ranking:
        rec.chosen = _pref_answer(ctx, spec, c["chosen"])
        rec.rejected = _pref_answer(ctx, spec, c["rejected"])
    return rec


def _pref_answer(ctx: _Ctx, spec: FormatSpec, col: str) -> list[dict]:
    """A chosen/rejected answer: one message (dict), a list of messages, or a bare string."""
    value = ctx.get(col, (dict, list, str), required=True, what="a message or a string")
    read = _sharegpt_message if spec.kind == "sharegpt" else _openai_message
    if isinstance(value, str):
        msgs = [{"role": "assistant", "content": value}]
    else:
        items = value if isinstance(value, list) else [value]
        msgs = [read(ctx, spec, m, f"{col}[{i}]" if isinstance(value, list) else col) for i, m in enumerate(items)]
    if not msgs:
        raise ctx.err("empty answer list", col)
    if msgs[-1]["role"] not in ("assistant", "function_call"):
        raise ctx.err(f"answer role is '{msgs[-1]['role']}', expected an assistant turn", col)
    if not msgs[-1]["content"].strip():
        raise ctx.err("empty assistant answer", col)
    return msgs


def _sharegpt_message(ctx: _Ctx, spec: FormatSpec, msg, where: str) -> dict:
    t = spec.tags
    if not isinstance(msg, dict):
        raise ctx.err(f"wrong type: expected a message object, got {type(msg).__name__}", where)
    roles = {t["user_tag"]: "user", t["assistant_tag"]: "assistant", t["observation_tag"]: "observation",
             t["function_tag"]: "function_call", t["system_tag"]: "system"}
    for key in (t["role_tag"], t["content_tag"]):
        if key not in msg:
            raise ctx.err(f"message has no '{key}' key (keys: {', '.join(msg)})", where,
                          "set tags: role_tag / content_tag to your message keys")
    role, content = msg[t["role_tag"]], msg[t["content_tag"]]
    if role not in roles:
        raise ctx.err(f"unknown role '{role}'", f"{where}.{t['role_tag']}",
                      f"expected one of {', '.join(map(str, roles))}; map yours with tags: user_tag/assistant_tag/...")
    if not isinstance(content, str):
        raise ctx.err(f"wrong type: expected a string, got {type(content).__name__}", f"{where}.{t['content_tag']}")
    return {"role": roles[role], "content": content}


_OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def _openai_message(ctx: _Ctx, spec: FormatSpec, msg, where: str) -> dict:
    if not isinstance(msg, dict):
        raise ctx.err(f"wrong type: expected a message object, got {type(msg).__name__}", where)
    if "role" not in msg:
        raise ctx.err("message has no 'role'", where)
    role = msg["role"]
    if role not in _OPENAI_ROLES:
        raise ctx.err(f"unknown role '{role}'", f"{where}.role", f"expected one of {', '.join(_OPENAI_ROLES)}")
    if role == "assistant" and msg.get("tool_calls"):
        return {"role": "function_call", "content": format_tool_calls(msg["tool_calls"], lambda m: ctx.err(m, where))}
    content = content_text(msg.get("content"), lambda m: ctx.err(m, f"{where}.content"))
    return {"role": _OPENAI_ROLES[role], "content": content}


_PROMPT_SIDE, _ANSWER_SIDE = ("user", "observation", "tool"), ("assistant", "function_call")


def check_order(messages: list[dict], *, ranking: bool, err, prompts: bool = False) -> None:
    """Check turn order: optional leading system, then prompt-side and answer-side turns alternate from a user turn.

    Consecutive `tool` results are one turn (parallel calls). A conversation ends on an answer, a preference prompt
    on a user turn; with `prompts`, on either. `err(message, index)` builds the DataError (index -1 = the whole list).
    """
    start = 1 if messages and messages[0]["role"] == "system" else 0
    if len(messages) == start:
        raise err("empty conversation", -1)
    prev = None
    for i in range(start, len(messages)):
        role = messages[i]["role"]
        if role == "system":
            raise err("a system message is only allowed first", i)
        side = role in _ANSWER_SIDE
        expected = "user" if prev is None else ("user/observation" if prev else "assistant/function_call")
        if (prev is None and side) or (side == prev and not (role == "tool" == messages[i - 1]["role"])):
            raise err(f"roles out of order: '{role}' where a {expected} turn was expected", i)
        if side and not messages[i]["content"].strip():
            raise err("empty assistant answer", i)
        prev = side
    if ranking and prev:
        raise err("a preference prompt must end with a user turn (answers go in chosen/rejected)", len(messages) - 1)
    if not ranking and not prev and not prompts:
        raise err(f"conversation ends with a '{messages[-1]['role']}' turn instead of an assistant answer",
                  len(messages) - 1)


def content_text(content, err) -> str:
    """OpenAI message content as text: a string, null (empty), or a list of {"type": "text", "text": ...} parts."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise err(f"unsupported content part '{kind}' (only text parts are supported)")
            parts.append(part["text"])
        return "".join(parts)
    raise err(f"wrong type: expected a string or a list of text parts, got {type(content).__name__}")


def format_tool_calls(calls, err) -> str:
    """OpenAI `tool_calls` as LLaMA-Factory function_call content: JSON {"name", "arguments"} (a list if several)."""
    if not isinstance(calls, list):
        raise err(f"wrong type: tool_calls must be a list, got {type(calls).__name__}")
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise err("each tool call needs function.name")
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                pass  # keep the raw string: the model was trained to emit it verbatim
        out.append({"name": fn["name"], "arguments": args})
    return json.dumps(out[0] if len(out) == 1 else out, ensure_ascii=False)
