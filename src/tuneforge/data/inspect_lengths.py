"""Lengths for the dataset doctor: characters always; tokens under a model's tokenizer and chat template on request."""

from __future__ import annotations

import numpy as np

from tuneforge.data.inspect_text import answer_messages, answer_text, prompt_messages, prompt_text
from tuneforge.data.records import Record


def char_lengths(records: list[Record]) -> tuple[list[int], list[int]]:
    return [len(prompt_text(r)) for r in records], [len(answer_text(r)) for r in records]


def token_lengths(records: list[Record], tokenizer) -> tuple[list[int], list[int]]:
    """(prompt tokens, answer tokens) per record, as training would see them through the chat template.

    Prompt = the rendered conversation up to the generation prompt; answer = the rest of the rendered conversation
    (answer text plus the template's end-of-turn tokens). Plain-text records count all their tokens as prompt.
    """
    from tuneforge.data.templates import render_prompt

    prompts, answers = [], []
    for r in records:
        if r.text is not None and not r.messages:
            prompts.append(len(tokenizer(r.text)["input_ids"]))
            answers.append(0)
            continue
        head = prompt_messages(r)
        p_text = render_prompt(tokenizer, head) if head else ""
        full = tokenizer.apply_chat_template(head + answer_messages(r), tokenize=False)
        n_prompt = len(tokenizer(p_text, add_special_tokens=False)["input_ids"]) if p_text else 0
        n_full = len(tokenizer(full, add_special_tokens=False)["input_ids"])
        prompts.append(n_prompt)
        answers.append(max(0, n_full - n_prompt))
    return prompts, answers


def load_model_tokenizer(model: str, template: str = "auto"):
    """The model's tokenizer with the chat template that training would use."""
    from tuneforge.data.templates import ensure_chat_template
    from tuneforge.models.load import load_tokenizer

    tok = load_tokenizer(model)
    ensure_chat_template(tok, template)
    return tok


def stats(values: list[int]) -> dict:
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=float)
    q = np.percentile(a, [50, 90, 95, 99])
    return {"n": int(a.size), "min": int(a.min()), "mean": round(float(a.mean()), 1), "p50": round(float(q[0]), 1),
            "p90": round(float(q[1]), 1), "p95": round(float(q[2]), 1), "p99": round(float(q[3]), 1), "max": int(a.max())}


def truncated(prompts: list[int], answers: list[int], cutoff: int) -> list[int]:
    """Indices of rows longer than `cutoff` tokens in total (training would cut them)."""
    return [i for i, (p, a) in enumerate(zip(prompts, answers)) if p + a > cutoff]
