"""Prompts: how a benchmark item becomes (context, continuations) to score, or a conversation to answer.

Styles (plain text, the default for multiple choice, as in lm-evaluation-harness):

* ``letters`` (MMLU, CMMLU, C-Eval): a one-line header naming the subject, the question with lettered choices,
  ``Answer:`` (``答案：`` for Chinese); the continuations are the letters.
* ``cloze`` (ARC, TruthfulQA, user files): ``Question: ...\\nAnswer:``; the continuations are the choice texts.
* ``continuation`` (HellaSwag): the context itself; the continuations are the endings.

With ``chat=True`` the same question goes into a user turn rendered by the tokenizer's chat template and each
continuation is exactly what training would put after the generation prompt for that answer (answer + end-of-turn
marker). Few-shot examples become earlier user/assistant turns. Generative tasks (GSM8K) are always chat.
"""

from __future__ import annotations

import re

from tuneforge.data.render import template_messages
from tuneforge.data.templates import render_prompt
from tuneforge.eval.items import Item
from tuneforge.eval.loglik import Request
from tuneforge.eval.tasks import Task

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_EN = {"answer": "Answer:", "question": "Question:",
       "header": "Multiple-choice questions about {subject}, each followed by its answer.\n\n",
       "instruct": "Reply with the letter of the correct choice only."}
_ZH = {"answer": "答案：", "question": "问题：",
       "header": "以下是关于{subject}的单项选择题，每题后附答案。\n\n",
       "instruct": "只回答正确选项的字母。"}
GSM8K_INSTRUCTION = "Solve the problem step by step. End with a line of the form 'The answer is N.'"


def _words(task: Task) -> dict:
    return _ZH if task.lang == "zh" else _EN


def _sep(task: Task) -> str:
    return "" if task.lang == "zh" else " "


def _question_block(task: Task, item: Item) -> str:
    w = _words(task)
    if task.style == "letters":
        lines = [item.question.strip()] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices or [])]
        return "\n".join(lines) + "\n" + w["answer"]
    if task.style == "continuation":
        return item.question.strip()
    return f"{w['question']} {item.question.strip()}\n{w['answer']}" if task.lang != "zh" else \
        f"{w['question']}{item.question.strip()}\n{w['answer']}"


def _answer_text(task: Task, item: Item, index: int) -> str:
    return LETTERS[index] if task.style == "letters" else (item.choices or [])[index]


def plain_request(task: Task, item: Item, shots: list[Item]) -> Request:
    """Context and continuations for plain-text (non-chat) log-likelihood scoring."""
    sep = _sep(task)
    header = _words(task)["header"].format(subject=task.subject_name(item.subject)) \
        if task.style == "letters" else ""
    solved = "".join(f"{_question_block(task, s)}{sep}{_answer_text(task, s, s.answer)}\n\n" for s in shots)
    context = header + solved + _question_block(task, item)
    conts = [sep + _answer_text(task, item, i) for i in range(len(item.choices or []))]
    return Request(context, conts)


def chat_request(tokenizer, messages: list[dict], answers: list[str], tools: list[dict] | None = None) -> Request:
    """Context = generation prompt (with the row's tool schemas, as in training); continuation = what the template
    puts after it for each answer."""
    messages = template_messages(messages)
    context = render_prompt(tokenizer, messages, tools)  # raises a clear error when there is no chat template
    extra = {"tools": tools} if tools else {}
    conts = []
    for a in answers:
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": a}], tokenize=False,
                                             **extra)
        conts.append(full[len(context):] if full.startswith(context) and len(full) > len(context) else a)
    return Request(context, conts, special_tokens=False)


def mc_messages(task: Task, item: Item, shots: list[Item]) -> tuple[list[dict], list[str]]:
    """Chat turns for a multiple-choice item and the answer text of each choice."""
    w = _words(task)

    def user(it: Item) -> str:
        body = _question_block(task, it)
        if task.style == "letters":
            head = w["header"].format(subject=task.subject_name(it.subject)).split("\n")[0]
            return f"{head}\n\n{body.rsplit(chr(10), 1)[0]}\n\n{w['instruct']}"
        return body.rsplit("\n", 1)[0] if task.style == "cloze" else body

    msgs: list[dict] = []
    for s in shots:
        msgs += [{"role": "user", "content": user(s)},
                 {"role": "assistant", "content": _answer_text(task, s, s.answer)}]
    msgs.append({"role": "user", "content": user(item)})
    answers = [_answer_text(task, item, i) for i in range(len(item.choices or []))]
    return msgs, answers


def mc_request(task: Task, item: Item, shots: list[Item], tokenizer=None, chat: bool = False) -> Request:
    if not chat:
        return plain_request(task, item, shots)
    msgs, answers = mc_messages(task, item, shots)
    return chat_request(tokenizer, msgs, answers)


def _solution_text(item: Item) -> str:
    sol = str(item.extra.get("solution") or "")
    sol = re.sub(r"<<[^>]*>>", "", sol)
    body, _, final = sol.rpartition("####")
    return f"{body.strip()}\nThe answer is {final.strip() or item.answer}."


def gen_messages(task: Task, item: Item, shots: list[Item]) -> list[dict]:
    """Conversation for a generative item (GSM8K style): the question plus the answer-format instruction."""
    msgs: list[dict] = []
    for s in shots:
        msgs += [{"role": "user", "content": f"{s.question.strip()}\n\n{GSM8K_INSTRUCTION}"},
                 {"role": "assistant", "content": _solution_text(s)}]
    msgs.append({"role": "user", "content": f"{item.question.strip()}\n\n{GSM8K_INSTRUCTION}"})
    return msgs
