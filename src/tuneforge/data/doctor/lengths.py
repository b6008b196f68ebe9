"""Lengths for the dataset doctor: characters always; tokens under a model's tokenizer and chat template on request.

Summaries come from `tuneforge.utils.stats.length_summary`, the same numbers `data preview` reports.
"""

from __future__ import annotations

from typing import Any

from tuneforge.data.doctor.result import Finding
from tuneforge.data.doctor.text import answer_messages, answer_text, prompt_messages, prompt_text, snippet
from tuneforge.data.records import Record
from tuneforge.utils.stats import length_summary


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
    from tuneforge.models.load import load_tokenizer

    return load_tokenizer(model, template=template)


def truncated(prompts: list[int], answers: list[int], cutoff: int) -> list[int]:
    """Indices of rows longer than `cutoff` tokens in total (training would cut them)."""
    return [i for i, (p, a) in enumerate(zip(prompts, answers)) if p + a > cutoff]


def _truncation(recs: list[Record], tp: list[int], ta: list[int], cutoff: int, k: int) -> tuple[Finding, dict]:
    cut = truncated(tp, ta, cutoff)
    st = {"cutoff": cutoff, "rows": len(cut), "share": round(len(cut) / max(1, len(recs)), 4)}
    ex = [{"source": recs[i].source, "tokens": tp[i] + ta[i], "text": snippet(prompt_text(recs[i]))}
          for i in sorted(cut, key=lambda i: -(tp[i] + ta[i]))[:k]]
    return Finding("truncation", "warning" if cut else "info", len(cut),
                   f"{len(cut)} rows are longer than cutoff {cutoff} tokens and would be cut", ex), st


def lengths(recs: list[Record], model: str | None, template: str, cutoff: int | None,
            k: int) -> tuple[list[Finding], dict, dict]:
    """Prompt / answer lengths (tokens with a model, else characters) and, with a cutoff, the rows it would cut.

    Returns (findings, stats, series): series holds the per-row lengths the report charts.
    """
    cp, ca = char_lengths(recs)
    st: dict[str, Any] = {"chars": {"prompt": length_summary(cp), "answer": length_summary(ca)}}
    series = {"unit": "characters", "prompt": cp, "answer": ca}
    findings = []
    if model:
        tp, ta = token_lengths(recs, load_model_tokenizer(model, template))
        st["tokens"] = {"model": model, "template": template, "prompt": length_summary(tp),
                        "answer": length_summary(ta), "total": length_summary([p + a for p, a in zip(tp, ta)])}
        series = {"unit": f"tokens ({model})", "prompt": tp, "answer": ta}
        if cutoff:
            finding, st["truncation"] = _truncation(recs, tp, ta, cutoff, k)
            findings.append(finding)
    elif cutoff:
        findings.append(Finding("truncation", "info", 0, "truncation needs --model (token counts); "
                                "only character lengths were measured"))
    return findings, st, series
