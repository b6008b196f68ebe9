"""The prompt side of a row for the RL stages (grpo, ppo): what the policy answers, and the row's answer, when it
has one, as the label the reward functions receive."""

from __future__ import annotations

from typing import Iterator

from tuneforge.data.records import Record
from tuneforge.data.render import template_messages
from tuneforge.data.templates import encode_prompt, uses_tools
from tuneforge.utils.errors import DataError


def prompt_and_label(rec: Record) -> tuple[list[dict], str | None]:
    """The conversation to answer and, for a row that has an answer (SFT data), that answer as the label."""
    if rec.messages and rec.messages[-1]["role"] in ("assistant", "function_call"):
        return rec.messages[:-1], rec.messages[-1]["content"]
    return rec.messages, None


def prompt_ids(rec: Record, messages: list[dict], tok) -> list[int]:
    """Token ids of the generation prompt (chat template, the record's tools)."""
    if rec.tools and not uses_tools(tok):
        file, line = rec.location()
        raise DataError("this row has tool schemas ('tools') but the chat template ignores them", file=file,
                        line=line, field="tools", hint="set model.template to a named template (chatml, llama3, ...)")
    return encode_prompt(tok, template_messages(messages, tok), rec.tools)


def prompt_rows(records: list[Record], tok) -> Iterator[tuple[Record, list[dict], str | None, list[int]]]:
    """(record, prompt turns, label, generation-prompt token ids) of every row, in order."""
    for rec in records:
        messages, label = prompt_and_label(rec)
        yield rec, messages, label, prompt_ids(rec, messages, tok)
