"""Classification (score and generate modes), generation metrics and the training callback."""

import json
from dataclasses import dataclass

import pytest

from tuneforge.data.records import Record
from tuneforge.eval.task_eval import check_labels, classify, compute_classification_metrics, evaluate_generation
from tuneforge.utils.errors import DataError


def rec(user: str, answer: str, line: int) -> Record:
    return Record(messages=[{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
                  source=f"dev.jsonl:{line}")


RECORDS = [rec("great fun", "1", 1), rec("dull and long", "0", 2), rec("a joy", "1", 3), rec("awful", "0", 4)]


@dataclass
class Gen:
    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 5
    completion_tokens: int = 1


class FakeEngine:
    """Returns canned answers in order; stands in for infer.engine.Engine."""

    def __init__(self, answers):
        self.answers, self.model, self.tokenizer, self.calls = answers, None, None, []

    def generate(self, conversations, **kw):
        self.calls.append((conversations, kw))
        return [a if isinstance(a, Gen) else Gen(a) for a in self.answers]


def test_labels_are_checked_with_file_line_field():
    with pytest.raises(DataError) as e:
        check_labels(RECORDS + [rec("meh", "neutral", 5)], ["0", "1"])
    assert (e.value.file, e.value.line, e.value.field) == ("dev.jsonl", 5, "output")
    with pytest.raises(DataError, match="at least 2 distinct labels"):
        check_labels(RECORDS, ["1"])
    with pytest.raises(DataError) as e:
        check_labels([Record(messages=[{"role": "user", "content": "x"}], source="f.jsonl:9")], ["0", "1"])
    assert e.value.line == 9


def test_generate_mode_parses_labels_and_counts_unparseable():
    engine = FakeEngine(["1", "The answer is 0.", "positive", Gen("1 1 1 1 1 1 1 1", "length", 5, 16)])
    result = classify(engine, None, RECORDS, ["0", "1"], "generate")
    m = result["metrics"]
    assert [e["parsed"] for e in result["examples"]] == ["1", "0", None, "1"]
    assert m["accuracy"] == pytest.approx(0.5) and m["n_unparseable"] == 1
    assert m["confusion"]["matrix"] == [[1, 1, 0], [0, 1, 1]]
    flags = result["flags"]["counts"]
    assert flags["wrong_format"] == 1 and flags["did_not_stop"] == 1 and flags["repetition"] == 1
    assert engine.calls[0][0][0] == [{"role": "user", "content": "great fun"}]  # prompt = turns before the answer


def test_generation_metrics_and_flags():
    records = [rec("translate: hello", "bonjour tout le monde", 1), rec("say it", "the cat is on the mat", 2)]
    engine = FakeEngine(["bonjour tout le monde", "the cat sat on the mat"])
    r = evaluate_generation(engine, records)
    m = r["metrics"]
    assert m["exact_match"] == pytest.approx(50.0)
    assert m["rouge1"] == pytest.approx((100 + 100 * 5 / 6) / 2)
    assert r["examples"][1]["scores"]["rougeL"] == pytest.approx(100 * 5 / 6, abs=0.01)
    assert r["flags"]["counts"]["too_long"] == 0


def test_score_mode_on_tiny_model(tiny_model_dir):
    from tuneforge.data.templates import ensure_chat_template
    from tuneforge.models.load import load_for_inference

    model, tok = load_for_inference(str(tiny_model_dir))
    ensure_chat_template(tok, "chatml")
    result = classify(model, tok, RECORDS, ["0", "1"], "score")
    assert result["metrics"]["n"] == 4 and result["metrics"]["n_unparseable"] == 0
    for ex in result["examples"]:
        assert sum(ex["probs"].values()) == pytest.approx(1.0, abs=1e-3)
        assert ex["prediction"] == max(ex["probs"], key=ex["probs"].get)
    assert compute_classification_metrics(model, tok, RECORDS, ["0", "1"])["accuracy"] == \
        result["metrics"]["accuracy"]


def test_no_chat_template_is_a_clear_error(tiny_model_dir):
    from tuneforge.models.load import load_for_inference
    from tuneforge.utils.errors import TuneforgeError

    model, tok = load_for_inference(str(tiny_model_dir))
    tok.chat_template = None
    with pytest.raises(TuneforgeError, match="no chat template"):
        classify(model, tok, RECORDS, ["0", "1"], "score")


def test_callback_logs_eval_cls_metrics_each_epoch(tiny_model_dir, tmp_path):
    from transformers import Trainer, TrainingArguments

    from tuneforge.data.templates import ensure_chat_template
    from tuneforge.eval.callback import ClassificationEvalCallback
    from tuneforge.models.load import load_for_inference

    model, tok = load_for_inference(str(tiny_model_dir))
    ensure_chat_template(tok, "chatml")
    model.train()
    ids = tok("hello world", return_tensors="pt")["input_ids"][0]
    data = [{"input_ids": ids, "labels": ids}] * 2
    cb = ClassificationEvalCallback(RECORDS, ["0", "1"], "score", every="epoch")
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=1,
                             report_to=[], logging_steps=100, save_strategy="no", use_cpu=True,
                             disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[cb])
    trainer.train()
    logged = [h for h in trainer.state.log_history if "eval_cls/accuracy" in h]
    assert len(logged) == 2 and {"eval_cls/macro_f1", "eval_cls/n_unparseable"} <= set(logged[0])
    assert len(cb.history) == 2 and model.training  # training mode restored
    json.dumps(logged)  # plain numbers only


def test_gsm8k_style_exact_match_with_fake_engine():
    from tuneforge.eval.bench import evaluate_generative
    from tuneforge.eval.items import Item
    from tuneforge.eval.tasks import Task

    items = [Item(f"g{i}", f"question {i}", ans, None, "gsm8k", extra={"solution": f"work\n#### {ans}"})
             for i, ans in enumerate(["18", "3", "70000", "5"])]
    engine = FakeEngine(["16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\nThe answer is 18.", "#### 3.0", "The profit is $70,000",
                         Gen("I am not sure", "length", 9, 256)])
    r = evaluate_generative(Task("gsm8k", items, "generate"), engine, progress=False)
    assert [e["extracted"] for e in r["examples"]] == ["18", "3.0", "70000", None]
    assert r["metrics"]["exact_match"] == pytest.approx(0.75) and r["metrics"]["n_unparseable"] == 1
    assert r["flags"]["counts"]["did_not_stop"] == 1 and r["flags"]["counts"]["wrong_format"] == 1
    assert "The answer is N" in engine.calls[0][0][0][-1]["content"]


TOOLS = [{"name": "lookup_review", "description": "Fetch the full review",
          "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}]


def test_task_prompts_carry_each_rows_tools_as_training_does(tiny_model_dir):
    """Evaluation renders a tool row's prompt with its tools (training does), in generate and score modes."""
    from tuneforge.data.templates import render_prompt
    from tuneforge.eval.prompts import chat_request
    from tuneforge.models.load import load_tokenizer

    with_tools = [Record(messages=r.messages, tools=TOOLS if i % 2 == 0 else None, source=r.source)
                  for i, r in enumerate(RECORDS)]
    engine = FakeEngine(["1", "0", "1", "0"])
    classify(engine, None, with_tools, ["0", "1"], "generate")
    evaluate_generation(FakeEngine(["1", "0", "1", "0"]), with_tools)
    assert engine.calls[0][1]["tools"] == [TOOLS, None, TOOLS, None]

    tok = load_tokenizer(str(tiny_model_dir), template="chatml")
    user = [{"role": "user", "content": "great fun"}]
    req = chat_request(tok, user, ["0", "1"], TOOLS)
    assert req.context == render_prompt(tok, user, TOOLS) and "lookup_review" in req.context
    assert req.continuations == chat_request(tok, user, ["0", "1"]).continuations
