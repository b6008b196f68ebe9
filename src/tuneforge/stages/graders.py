"""OpenAI's graders as one reward of the RL stages: `{name: grader, grader: {type: string_check, ...}}`.

A grader scores a sampled answer against the dataset row, with the same fields OpenAI's reinforcement fine-tuning
uses, so a grader written for OpenAI works here unchanged:

    {type: string_check, input: "{{sample.output_text}}", reference: "{{item.answer}}", operation: eq}
    {type: text_similarity, input: "{{sample.output_text}}", reference: "{{item.answer}}",
     evaluation_metric: fuzzy_match}           # also bleu, gleu, rouge_1 … rouge_5, rouge_l
    {type: multi, graders: {a: {...}, b: {...}}, calculate_output: "0.5 * a + 0.5 * b"}
    {type: python, source: "def grade(sample, item): ..."}   # runs the given code: off unless allow_python

Templates: {{sample.output_text}} is the answer, {{sample.output_json.KEY}} a key of the answer read as JSON, and
{{item.COLUMN}} (dots reach into nested values) a column of the row. A row that lacks a referenced column scores
None (not applicable), never a silent 0. string_check scores 1 or 0 (like: substring, ilike: case-insensitive
substring); text_similarity 0..1; multi evaluates its formula (+ - * /, min, max, abs, numbers and the graders'
names) over the sub-graders' scores.
Not supported (a clear error when configured): score_model and label_model (a model as grader: use the `judge`
reward), and the cosine and meteor metrics (they need an embedding model or WordNet).
"""

from __future__ import annotations

import ast
import difflib
import json
import operator
import re
from typing import Any

from tuneforge.utils.errors import ConfigError
from tuneforge.utils.textmetrics import content_tokens, ngrams, rouge_l, rouge_n, sentence_bleu

TYPES = ("string_check", "text_similarity", "multi", "python")
METRICS = ("fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")
_TEMPLATE = re.compile(r"\{\{\s*(sample|item)\.([\w.\-]+)\s*\}\}")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_FUNCS = {"min": min, "max": max, "abs": abs}


class _Missing(Exception):
    """A template names a field the row does not have."""


def check_grader(grader: dict, allow_python: bool = False, where: str = "grader") -> None:
    """Fail on a grader that cannot run, before any model loads."""
    if not isinstance(grader, dict):
        raise ConfigError(f"{where} must be an object with a `type`")
    kind = grader.get("type")
    if kind in ("score_model", "label_model"):
        raise ConfigError(f"{where}: {kind} graders are not supported",
                          hint="score answers with a model through the `judge` reward (stage.rewards)")
    if kind not in TYPES:
        raise ConfigError(f"{where}.type must be one of {', '.join(TYPES)}, got {kind!r}")
    need = {"string_check": ("input", "reference", "operation"), "text_similarity": ("input", "reference",
                                                                                     "evaluation_metric"),
            "multi": ("graders", "calculate_output"), "python": ("source",)}[kind]
    missing = [k for k in need if k not in grader]
    if missing:
        raise ConfigError(f"{where} ({kind}) needs {', '.join(missing)}")
    if kind == "string_check" and grader["operation"] not in ("eq", "ne", "like", "ilike"):
        raise ConfigError(f"{where}.operation must be eq, ne, like or ilike")
    if kind == "text_similarity" and grader["evaluation_metric"] not in METRICS:
        raise ConfigError(f"{where}.evaluation_metric {grader['evaluation_metric']!r} is not supported",
                          hint=f"choose one of {', '.join(METRICS)}")
    if kind == "python" and not allow_python:
        raise ConfigError(f"{where}: python graders run the given code and are switched off",
                          hint="the server operator can allow them: tuneforge serve --allow-python-grader")
    if kind == "multi":
        subs = grader["graders"]
        if not isinstance(subs, dict) or not subs:
            raise ConfigError(f"{where}.graders must map names to graders")
        for name, sub in subs.items():
            check_grader(sub, allow_python, f"{where}.graders.{name}")
        _formula(grader["calculate_output"], set(subs), where)


def _formula(text: str, names: set[str], where: str) -> ast.AST:
    try:
        tree = ast.parse(str(text), mode="eval").body
    except SyntaxError as err:
        raise ConfigError(f"{where}.calculate_output is not a formula: {err.msg}") from None
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Call, ast.Load, ast.USub,
                               ast.UAdd, *_OPS))
        if not ok or isinstance(node, ast.Name) and node.id not in names | set(_FUNCS) or \
                isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
            raise ConfigError(f"{where}.calculate_output may use numbers, + - * /, min, max, abs and the names "
                              f"{', '.join(sorted(names))}")
    return tree


def _eval(node: ast.AST, scores: dict[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return scores[node.id]
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, scores)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        return _OPS[type(node.op)](_eval(node.left, scores), _eval(node.right, scores))
    return _FUNCS[node.func.id](*(_eval(a, scores) for a in node.args))


def _lookup(value: Any, path: list[str]) -> Any:
    for key in path:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise _Missing(key)
    return value


def render(template: str, sample: dict, item: dict) -> str:
    def one(m: re.Match) -> str:
        source = sample if m.group(1) == "sample" else item
        value = _lookup(source, m.group(2).split("."))
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return _TEMPLATE.sub(one, str(template))


def _gleu(hyp: str, ref: str, max_n: int = 4) -> float:
    """Sentence GLEU: min(precision, recall) of the 1..4-gram matches."""
    h, r = content_tokens(hyp), content_tokens(ref)
    hits = total_h = total_r = 0
    for n in range(1, max_n + 1):
        hg, rg = ngrams(h, n), ngrams(r, n)
        hits += sum(min(c, rg[g]) for g, c in hg.items())
        total_h, total_r = total_h + sum(hg.values()), total_r + sum(rg.values())
    return hits / max(total_h, total_r) if max(total_h, total_r) else 0.0


def similarity(metric: str, hyp: str, ref: str) -> float:
    if metric == "fuzzy_match":
        return difflib.SequenceMatcher(None, hyp, ref).ratio()
    if metric == "bleu":
        return sentence_bleu(hyp, ref) / 100
    if metric == "gleu":
        return _gleu(hyp, ref)
    ht, rt = content_tokens(hyp), content_tokens(ref)
    return rouge_l(ht, rt) if metric == "rouge_l" else rouge_n(ht, rt, int(metric[-1]))


def grade(grader: dict, sample: dict, item: dict) -> float:
    kind = grader["type"]
    if kind == "string_check":
        got, want, op = render(grader["input"], sample, item), render(grader["reference"], sample, item), \
            grader["operation"]
        return float({"eq": got == want, "ne": got != want, "like": want in got,
                      "ilike": want.lower() in got.lower()}[op])
    if kind == "text_similarity":
        return similarity(grader["evaluation_metric"], render(grader["input"], sample, item),
                          render(grader["reference"], sample, item))
    if kind == "multi":
        scores = {name: grade(sub, sample, item) for name, sub in grader["graders"].items()}
        return _eval(_formula(grader["calculate_output"], set(scores), "grader"), scores)
    namespace: dict = {}
    exec(compile(grader["source"], "<python grader>", "exec"), namespace)  # allowed by the operator (check_grader)
    return float(namespace["grade"](sample, item))


def _sample(completion) -> dict:
    from tuneforge.stages.rewards import completion_text  # rewards imports this module

    text = completion_text(completion)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return {"output_text": text, "output_json": parsed}


def grader(prompts, completions, completion_ids=None, *, grader: dict, allow_python: bool = False, **columns):
    """The reward: each completion graded against its row (see the module docstring); None where a referenced
    column is missing."""
    check_grader(grader, allow_python)
    out: list[float | None] = []
    for i, completion in enumerate(completions):
        item = {k: v[i] for k, v in columns.items() if isinstance(v, (list, tuple)) and len(v) == len(completions)}
        try:
            out.append(grade(grader, _sample(completion), item))
        except _Missing:
            out.append(None)
    return out
