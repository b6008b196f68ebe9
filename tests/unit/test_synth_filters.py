"""Synthetic data without a model: the self-instruct filters, the pipeline around a scripted generator, template
expansion, and the rows' origin as the data readers load it."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from tuneforge.data.catalog import dataset_spec, load_dataset
from tuneforge.synth.filters import (AnswerFormat, NearCopyIndex, answer_format, answer_problem,
                                     classification_labels, first_instruction, instruction_problem)
from tuneforge.synth.generators import Draft
from tuneforge.synth.report import REASONS
from tuneforge.synth.rows import make_row, origin
from tuneforge.synth.seeds import common_task, load_seeds
from tuneforge.synth.self_instruct import SelfInstruct, SelfInstructOptions
from tuneforge.synth.templates import expand, load_spec, synthesize as expand_to_file
from tuneforge.utils.errors import ConfigError, DataError
from tuneforge.utils.textmetrics import content_tokens, rouge_l

TASK = "Is this review positive? Answer 1 for yes, 0 for no."
REVIEWS = [("a warm, funny and moving film", "1"), ("dull, long and badly acted", "0"),
           ("the best thriller of the year", "1"), ("a mess from start to finish", "0"),
           ("charming cast and a clever script", "1"), ("i wanted my two hours back", "0")]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def label_seeds(tmp_path):
    return write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": TASK, "input": t, "output": a} for t, a in REVIEWS])


# --- the ROUGE-L filter ---------------------------------------------------------------------------------------------


def test_rouge_l_filter_drops_a_near_copy_and_keeps_a_different_instruction():
    index = NearCopyIndex(["Write a short poem about the sea."])
    hit = index.near_copy("Write a short poem about the ocean.")
    assert hit is not None and hit[0] == pytest.approx(6 / 7) and hit[1] == "Write a short poem about the sea."
    assert index.near_copy("List three uses of baking soda.") is None
    assert index.near_copy("Write a long essay about the history of the sea.") is None  # ROUGE-L 0.59


def test_the_threshold_is_inclusive_and_kept_rows_join_the_index():
    index = NearCopyIndex(["a b c d e f g h i j"])
    assert index.near_copy("a b c d e f g x y z")[0] == pytest.approx(0.7)  # LCS 7 of 10 + 10 words: exactly 0.7
    assert index.near_copy("a b c d e f x y z w") is None  # 0.6
    index.add("k l m n o p")
    assert index.near_copy("k l m n o q") is not None


def test_skipping_pairs_by_shared_words_never_changes_the_answer():
    """The shortcut (LCS <= shared words) must agree with computing ROUGE-L for every pair."""
    rng = random.Random(0)
    words = "the a cat dog sat ran on mat far away big small red".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(120)]
    index = NearCopyIndex(texts[:60])
    for text in texts[60:]:
        expected = any(rouge_l(content_tokens(text), content_tokens(t)) >= 0.7 for t in texts[:60])
        assert (index.near_copy(text) is not None) == expected, text


# --- instructions and answers -----------------------------------------------------------------------------------


def test_wrong_format_empty_and_over_long_answers_are_dropped():
    labels = AnswerFormat(labels=("0", "1"))
    assert answer_problem("1", False, labels) is None
    assert answer_problem(" 0\n", False, labels) is None
    assert answer_problem("positive", False, labels) == "wrong_format"
    assert answer_problem("1.", False, labels) == "wrong_format"
    assert answer_problem("   ", False, labels) == "empty_answer"
    assert answer_problem("1", True, labels) == "answer_too_long"
    assert answer_problem('{"a": 1}', False, AnswerFormat(json=True)) is None
    assert answer_problem("{a: 1", False, AnswerFormat(json=True)) == "wrong_format"
    assert answer_problem("anything at all", False, AnswerFormat()) is None


def test_the_seeds_answers_decide_the_format():
    assert classification_labels(["1", "0", "1", "0 "]) == ("0", "1")
    assert classification_labels(["1", "0", "2"]) is None  # one row per label: not a labelling
    assert classification_labels(["Paris is the capital.", "Tokyo.", "Paris is the capital.", "Tokyo."]) == \
        ("Paris is the capital.", "Tokyo.")  # short repeated answers are labels too
    assert answer_format(["A long free answer, number one.", "Another one, quite different."]) == AnswerFormat()
    assert answer_format(['{"x": 1}', '[1, 2]']) == AnswerFormat(json=True)
    assert answer_format(["a", "b", "c"], labels=("a", "b", "c")).labels == ("a", "b", "c")


def test_instruction_checks():
    assert instruction_problem("", False, open_task=True) == "empty_instruction"
    assert instruction_problem("Write a haiku about rain.", True, open_task=True) == "instruction_cut"
    assert instruction_problem("Hello there", False, open_task=True) == "instruction_too_short"
    assert instruction_problem(" ".join(["word"] * 151), False, open_task=True) == "instruction_too_long"
    assert instruction_problem("Describe the picture below.", False, open_task=True) == "needs_media"
    # an input of a task may mention a video: only whole new tasks that need one are dropped
    assert instruction_problem("the video transfer looks muddy", False, open_task=False) is None


def test_the_instruction_is_cut_out_of_a_chatty_reply():
    assert first_instruction("Here is a new input:\nmy new review\nand more", one_line=True) == ("my new review", True)
    assert first_instruction("Input 7: \"a quiet, lovely film\"", one_line=True) == ("a quiet, lovely film", False)
    assert first_instruction("Write a limerick.\nTask 9: Write a sonnet.", one_line=False) == ("Write a limerick.",
                                                                                             True)
    assert first_instruction("<think>hmm</think>1. Sort these numbers.", one_line=False)[0] == "Sort these numbers."


def test_the_task_is_the_lines_every_seed_starts_with():
    assert common_task(["Classify.\nfoo", "Classify.\nbar baz"]) == "Classify."
    assert common_task(["Classify.\nfoo", "Classify."]) is None  # a prompt with nothing after the lines
    assert common_task(["Write a poem.", "Write a song."]) is None


# --- the pipeline around a scripted generator ------------------------------------------------------------------------


class Scripted:
    """A generator that writes instructions from `instructions` and answers from `answers`, in order."""

    name = "scripted"

    def __init__(self, instructions, answers=()):
        self.instructions, self.answers = iter(instructions), iter(answers)
        self.asked: list[list[dict]] = []

    def generate(self, conversations, *, max_tokens, temperature, seed):
        out = []
        for conv in conversations:
            self.asked.append(conv)
            writing = "Reply with the new" in conv[-1]["content"]
            text, reason = next(self.instructions if writing else self.answers)
            out.append(Draft(text, reason))
        return out


def test_self_instruct_input_first_drops_each_bad_candidate_for_its_reason(label_seeds, tmp_path):
    seeds = load_seeds(str(label_seeds))
    assert seeds.task == TASK and seeds.labels == ("0", "1") and seeds.one_line
    test_parts = ["an utterly forgettable sequel with no jokes"]
    instructions = [("a quietly devastating family drama", "stop"),  # kept
                    ("a warm, funny and moving film!", "stop"),  # a seed again
                    ("an utterly forgettable sequel with no jokes at all", "stop"),  # a test row
                    ("too", "stop"),  # under 3 words
                    ("the plot goes on and on and", "length"),  # cut by the token limit
                    ("a gorgeous score and a fine lead", "stop"),  # answered "positive"
                    ("a tiresome, muddled comedy", "stop"),  # answered at length
                    ("a quietly devastating family drama indeed", "stop"),  # near-copy of the row kept first
                    ("", "stop"), ("one more lovely little film", "stop")]
    answers = [("1", "stop"), ("positive", "stop"), ("0 because", "length"), ("0", "stop")]
    gen = Scripted(instructions, answers)
    opts = SelfInstructOptions(n=3, shots=2, round_size=10, max_tries=10, output_first=False)
    run = SelfInstruct(seeds, gen, opts, test_parts)
    rows = run.run(progress=False)
    t = run.tally
    assert dict(t.dropped) == {"near_copy": 2, "near_test_row": 1, "instruction_too_short": 1,
                               "instruction_cut": 1, "wrong_format": 1, "answer_too_long": 1,
                               "empty_instruction": 1}
    assert t.generated == 10 and t.kept == 2 == len(rows) and t.generated == t.kept + sum(t.dropped.values())
    assert set(t.dropped) <= set(REASONS)
    assert [(r["input"], r["output"]) for r in rows] == [("a quietly devastating family drama", "1"),
                                                         ("one more lovely little film", "0")]
    assert run.stopped == "max tries"
    # the answer request shows seed exchanges first, then the new prompt with the task line
    answer_conv = next(c for c in gen.asked if "Reply with the new" not in c[-1]["content"])
    assert len(answer_conv) == 2 * opts.answer_shots + 1 and answer_conv[-1]["content"].startswith(TASK + "\n")


def test_output_first_balances_labels_and_uses_them_as_answers(label_seeds):
    seeds = load_seeds(str(label_seeds))
    reviews = ["a bold and tender debut", "the jokes never land once", "two hours of pure joy",
               "wooden acting throughout the film", "smart, sharp and surprising", "nothing here makes any sense"]
    gen = Scripted((r, "stop") for r in reviews)
    run = SelfInstruct(seeds, gen, SelfInstructOptions(n=6, shots=2))
    rows = run.run(progress=False)
    assert run.output_first and len(rows) == 6 and run.tally.generated == 6
    assert sorted(r["output"] for r in rows) == ["0", "0", "0", "1", "1", "1"]
    for row, conv in zip(rows, gen.asked):  # each request showed seeds of the label the row got
        assert f'whose correct answer is "{row["output"]}"' in conv[-1]["content"]
        shown = [int(s.rsplit(":", 1)[1]) for s in row["source"]["seed_rows"]]
        assert all(REVIEWS[line - 1][1] == row["output"] for line in shown)


def test_a_generator_that_always_fails_stops_the_run(label_seeds):
    seeds = load_seeds(str(label_seeds))

    class Down:
        name = "down"

        def generate(self, conversations, **kw):
            return [Draft("", "error", "URLError: refused") for _ in conversations]

    with pytest.raises(ConfigError, match="every request to the generator down failed: .*refused"):
        SelfInstruct(seeds, Down(), SelfInstructOptions(n=2)).run(progress=False)


# --- rows and their origin -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["alpaca", "openai"])
def test_rows_load_with_the_readers_and_keep_their_origin(tmp_path, fmt):
    source = origin("self-instruct", "gen-model", seed_rows=["seeds.jsonl:3"])
    rows = [make_row(fmt, instruction=TASK, task_input="a fine film", answer="1", system="Be brief.", source=source),
            make_row(fmt, instruction="Name a colour.", answer="Blue.", source=source)]
    recs = load_dataset(dataset_spec(path=str(write_jsonl(tmp_path / "rows.jsonl", rows)))).records
    assert [m["content"] for m in recs[0].messages] == ["Be brief.", f"{TASK}\na fine film", "1"]
    assert [m["role"] for m in recs[1].messages] == ["user", "assistant"]
    assert all(r.extra["source"] == {"kind": "synthetic", "method": "self-instruct", "generator": "gen-model",
                                     "seed_rows": ["seeds.jsonl:3"]} for r in recs)


# --- template expansion ----------------------------------------------------------------------------------------

SPEC = """
slots:
  animal: [cat, dog, bird]
  color: [red, blue]
  size: [small, big, huge, tiny]
  place:
    - {country: France, capital: Paris}
    - {country: Japan, capital: Tokyo}
templates:
  - prompt: "Describe a {size} {color} {animal}."
    answer: "A {color} {animal}, {size}."
  - prompt: "What is the capital of {country}?"
    answer: "{capital}"
  - prompt: "Say {word}."
    answer: "{word}"
    slots: {word: [yes, no, 3]}
"""


@pytest.fixture()
def spec(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return load_spec(path)


def test_the_cross_product_covers_the_slots_each_template_names(spec):
    rows = expand(spec)
    assert [t.size for t in spec.templates] == [4 * 2 * 3, 2, 3] and spec.size == len(rows) == 29
    first = [r.prompt for r in rows if r.template == 1]
    # the spec's slot order (animal, color, size), the last one varying fastest
    assert first == [f"Describe a {s} {c} {a}." for a, c, s in itertools.product(
        ["cat", "dog", "bird"], ["red", "blue"], ["small", "big", "huge", "tiny"])]
    assert rows[0].values == {"animal": "cat", "color": "red", "size": "small"}
    assert rows[-1].answer == "3"  # a number is a text
    assert {(r.prompt, r.answer) for r in rows if r.template == 2} == {("What is the capital of France?", "Paris"),
                                                                       ("What is the capital of Japan?", "Tokyo")}


def test_a_seeded_sample_is_a_repeatable_subset(spec):
    full = [(e.prompt, e.answer) for e in expand(spec)]
    a, b = expand(spec, sample=10, seed=7), expand(spec, sample=10, seed=7)
    assert len(a) == 10 and a == b
    assert {(e.prompt, e.answer) for e in a} <= set(full) and len({e.prompt for e in a}) == 10
    assert [e.prompt for e in expand(spec, sample=10, seed=8)] != [e.prompt for e in a]
    assert [(e.prompt, e.answer) for e in a] == [p for p in full if p in {(x.prompt, x.answer) for x in a}]
    with pytest.raises(DataError, match="expands to 29 rows"):
        expand(spec, sample=30)


def test_spec_errors_name_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("slots: {animal: [cat]}\ntemplates: ['Pet the {animl}.']\n")
    with pytest.raises(DataError, match=r"(?s)\{animl\} names no slot.*did you mean \{animal\}"):
        load_spec(path)
    path.write_text("slots: {animal: [cat]}\ntemplate: ['x']\n")
    with pytest.raises(DataError, match="(?s)unknown key .template..*did you mean 'templates'"):
        load_spec(path)


def test_template_rows_are_written_once_with_their_origin(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(SPEC)
    out = tmp_path / "rows.jsonl"
    rep = expand_to_file(str(spec_file), out, {}, sample=5, seed=1, progress=False)
    assert rep.generated == rep.kept == 5 and rep.dropped == {} and rep.doctor["rows"] == 5
    recs = load_dataset(dataset_spec(path=str(out))).records
    assert [r.extra["source"]["generator"] for r in recs] == ["template"] * 5
    assert all(r.extra["source"]["kind"] == "synthetic" and r.extra["source"]["slots"] for r in recs)
    before = out.read_bytes()
    with pytest.raises(DataError, match="refusing to overwrite"):
        expand_to_file(str(spec_file), out, {}, sample=5, seed=2, progress=False)
    assert out.read_bytes() == before


# --- the endpoint generator ------------------------------------------------------------------------------------


@pytest.fixture()
def chat_server():
    """A stand-in OpenAI-compatible server: answers "reply N" (finish_reason from the last message), records each
    request, and fails the first request with HTTP 503 when `state["fail_once"]` is set."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    state = {"requests": [], "fail_once": False}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"].append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            if state.pop("fail_once", False):
                self.send_response(503)
                self.end_headers()
                return
            last = body["messages"][-1]["content"]
            reply = {"choices": [{"message": {"role": "assistant", "content": f"reply to {last}"},
                                  "finish_reason": "length" if "long" in last else "stop"}]}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    server.shutdown()


def test_the_endpoint_generator_sends_conversations_with_a_seed_each(chat_server, monkeypatch):
    from tuneforge.synth.generators import build_generator

    url, state = chat_server
    monkeypatch.setenv("SYNTH_TEST_KEY", "sk-test")
    gen = build_generator(endpoint=url, model_name="gen-1", api_key_env="SYNTH_TEST_KEY", concurrency=2)
    state["fail_once"] = True  # a 503 is retried
    convs = [[{"role": "user", "content": "short"}], [{"role": "system", "content": "s"},
                                                      {"role": "user", "content": "long one"}]]
    drafts = gen.generate(convs, max_tokens=9, temperature=0.5, seed=40)
    assert drafts == [Draft("reply to short", "stop"), Draft("reply to long one", "length")]
    assert drafts[1].cut and gen.name == f"gen-1 @ {url}"
    bodies = sorted((r["body"] for r in state["requests"][1:]), key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == [40, 41] and {b["model"] for b in bodies} == {"gen-1"}
    assert bodies[1]["messages"] == convs[1] and bodies[0]["temperature"] == 0.5 and bodies[0]["max_tokens"] == 9
    assert {r["auth"] for r in state["requests"]} == {"Bearer sk-test"}
    assert {r["path"] for r in state["requests"]} == {"/v1/chat/completions"}


def test_generator_options_fail_before_anything_loads(monkeypatch):
    from tuneforge.synth.generators import build_generator

    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match="not both"):
        build_generator(model="m", endpoint="http://x/v1", model_name="n")
    with pytest.raises(ConfigError, match="needs --model-name"):
        build_generator(endpoint="http://x/v1")
    with pytest.raises(ConfigError, match="not an http"):
        build_generator(endpoint="x/v1", model_name="n")
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR"):
        build_generator(endpoint="http://x/v1", model_name="n", api_key_env="NO_SUCH_KEY_VAR")
    assert build_generator() is None
