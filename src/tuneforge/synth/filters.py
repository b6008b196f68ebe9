"""The filters a synthetic row must pass, after the self-instruct paper (Wang et al., 2023, section 2.3).

- An instruction is dropped when its ROUGE-L F1 against any existing one (the seeds, the rows kept so far) is >= 0.7
  (`NearCopyIndex`), the paper's diversity filter; the same test against a test file's prompts keeps the test set
  out of the training data.
- Instructions that are empty, cut off by the token limit, under 3 or over 150 words, or (for open tasks) need
  something a text model cannot see or make (an image, a file, a chart: the paper's keyword list) are dropped.
- Answers that are empty, cut off by the token limit (over-long), or not in the seeds' format are dropped: for
  classification-like seeds (every answer one of a few short labels) an answer that is not one of the labels, for
  JSON seeds an answer that does not parse.

Every check returns a reason name (what the report counts) or None. ROUGE-L is `utils.textmetrics.rouge_l` over
`content_tokens` (case-folded words, punctuation dropped, one token per CJK character).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

from tuneforge.utils.textmetrics import content_tokens, rouge_l

NEAR_COPY_ROUGE_L = 0.7
MIN_WORDS, MAX_WORDS = 3, 150
MAX_LABELS, MAX_LABEL_CHARS = 20, 40
# The paper drops instructions naming things a language model can neither read nor produce.
MEDIA_WORDS = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
               "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
_MEDIA_RE = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in MEDIA_WORDS) + r")\b", re.IGNORECASE)
_THINKING = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)  # a reasoning model's thoughts are not the text
_MARKER = re.compile(r"^\s*(?:(?:new\s+)?(?:task|instruction|input|example|question)\s*\d*\s*[:.)]"
                     r"|\d+\s*[.)]\s|[-*•]\s)\s*", re.IGNORECASE)
_ANSWER_MARKER = re.compile(r"^\s*(?:answer|output|label)\s*:\s*", re.IGNORECASE)
_NEXT_MARKER = re.compile(r"\n\s*(?:task|instruction|input|example)\s*\d+\s*[:.]", re.IGNORECASE)
_QUOTES = "\"'“”‘’`"


@dataclass
class _Entry:
    text: str
    tokens: list[str]
    bag: Counter


class NearCopyIndex:
    """Texts seen so far; `near_copy(text)` finds one whose ROUGE-L F1 with `text` reaches the threshold.

    ROUGE-L F1 is 2·LCS / (len(a) + len(b)), and the LCS is at most the number of shared words, so a pair whose
    shared words fall short is skipped without computing the LCS (exact, and most pairs are skipped)."""

    def __init__(self, texts=(), threshold: float = NEAR_COPY_ROUGE_L):
        self.threshold = threshold
        self.entries: list[_Entry] = []
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, text: str) -> None:
        tokens = content_tokens(text)
        self.entries.append(_Entry(text, tokens, Counter(tokens)))

    def near_copy(self, text: str) -> tuple[float, str] | None:
        """(ROUGE-L F1, the text) of the first entry at or above the threshold, else None."""
        tokens = content_tokens(text)
        if not tokens:
            return None
        bag = Counter(tokens)
        for entry in self.entries:
            if not entry.tokens:
                continue
            need = self.threshold * (len(tokens) + len(entry.tokens)) / 2
            if sum((bag & entry.bag).values()) < need:
                continue
            score = rouge_l(tokens, entry.tokens)
            if score >= self.threshold:
                return score, entry.text
        return None


@dataclass(frozen=True)
class AnswerFormat:
    """What a right answer looks like: one of `labels` (classification), JSON, or anything (free text)."""

    labels: tuple[str, ...] | None = None
    json: bool = False

    def describe(self) -> str:
        if self.labels:
            return "one of the labels " + ", ".join(repr(label) for label in self.labels)
        return "JSON" if self.json else "free text"


def classification_labels(answers: list[str]) -> tuple[str, ...] | None:
    """The labels when the answers look like classification: 2 to 20 distinct short one-line answers, each used by
    two rows on average at least; else None."""
    distinct = sorted({a.strip() for a in answers})
    short = all(len(a) <= MAX_LABEL_CHARS and "\n" not in a for a in distinct)
    if short and 2 <= len(distinct) <= MAX_LABELS and len(distinct) * 2 <= len(answers):
        return tuple(distinct)
    return None


def _parses_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def answer_format(answers: list[str], labels: tuple[str, ...] | None = None) -> AnswerFormat:
    """The format of the seeds' answers: the given labels, detected labels, JSON when every answer is an object or
    list in JSON, else free text."""
    labels = labels or classification_labels(answers)
    if labels:
        return AnswerFormat(labels=tuple(labels))
    structured = [a.strip() for a in answers if a.strip()[:1] in ("{", "[")]
    is_json = bool(answers) and len(structured) == len(answers) and all(map(_parses_as_json, structured))
    return AnswerFormat(json=is_json)


def clean_text(text: str) -> str:
    """Generated text without a reasoning block, surrounding blank space and a leading list/"Task 3:" marker."""
    text = _THINKING.sub("", text).strip()
    return _MARKER.sub("", text, count=1).strip()


def clean_answer(text: str) -> str:
    """A generated answer without a reasoning block, surrounding blank space and a leading "Answer:" (a list in
    the answer is left alone)."""
    return _ANSWER_MARKER.sub("", _THINKING.sub("", text).strip(), count=1).strip()


def first_instruction(text: str, *, one_line: bool) -> tuple[str, bool]:
    """(the instruction in a generated text, whether it ended inside the text: then a token limit did not cut it).

    A reply may hold more than asked for: the text stops at the next "Task 4:" marker, and with `one_line` (every
    seed's input is one line) at the first line that is not a preamble such as "Here is a new input:"."""
    text = _THINKING.sub("", text)
    marker = _NEXT_MARKER.search(text)
    ended = marker is not None
    text = text[:marker.start()] if marker else text
    if not one_line:
        return _strip_quotes(clean_text(text)), ended
    lines = [line for line in text.split("\n") if line.strip()]
    while len(lines) > 1 and lines[0].strip().endswith(":"):
        lines.pop(0)
    if not lines:
        return "", ended
    complete = ended or len(lines) > 1 or text.rstrip(" \t").endswith("\n")
    return _strip_quotes(clean_text(lines[0])), complete


def _strip_quotes(text: str) -> str:
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        return text[1:-1].strip()
    return text


def instruction_problem(text: str, cut: bool, *, open_task: bool) -> str | None:
    """Why a generated instruction (or a task's input) is dropped, else None. `cut`: the token limit ended it."""
    if not text.strip():
        return "empty_instruction"
    if cut:
        return "instruction_cut"
    words = len(content_tokens(text))
    if words < MIN_WORDS:
        return "instruction_too_short"
    if words > MAX_WORDS:
        return "instruction_too_long"
    if open_task and _MEDIA_RE.search(text):
        return "needs_media"
    return None


def answer_problem(text: str, cut: bool, fmt: AnswerFormat) -> str | None:
    """Why a generated answer is dropped, else None. `cut`: the answer token limit ended it (over-long)."""
    if not text.strip():
        return "empty_answer"
    if cut:
        return "answer_too_long"
    if fmt.labels and text.strip() not in fmt.labels:
        return "wrong_format"
    if fmt.json and not _parses_as_json(text.strip()):
        return "wrong_format"
    return None
