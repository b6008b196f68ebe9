"""`tuneforge data synth` end to end with a real generator: the 656K TinyStories model (chatml template) writes the
rows, the data readers load them back, and the report's counts add up."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tuneforge.cli import app
from tuneforge.data.catalog import dataset_spec, load_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

TASK = "Is this story happy? Answer 1 for happy, 0 for sad."
STORIES = [("Tom found a lost puppy and took it home.", "1"), ("Lily broke her favorite toy and cried.", "0"),
           ("The sun was warm and the kids played all day.", "1"), ("Ben lost his ball in the dark woods.", "0"),
           ("Mia got a big red balloon for her birthday.", "1"), ("The dog was sad because it rained all day.", "0")]


@pytest.fixture()
def seeds(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"instruction": TASK, "input": s, "output": a}) + "\n" for s, a in STORIES))
    return path


def synth(*args):
    """(result, the JSON report); a TuneforgeError is left in result.exception (the CLI's main() prints it)."""
    result = CliRunner().invoke(app, ["data", "synth", *map(str, args), "--json"])
    return result, (json.loads(result.stdout) if result.exit_code == 0 else None)


def failed(result, message: str) -> bool:
    return result.exit_code != 0 and message in str(result.exception)


def adds_up(rep: dict) -> bool:
    return rep["generated"] == rep["kept"] + sum(rep["dropped"].values())


def test_self_instruct_writes_rows_the_readers_load(tiny_model, seeds, tmp_path):
    out = tmp_path / "synth.jsonl"
    result, rep = synth("self-instruct", "--seed", seeds, "--out", out, "--n", 4, "--model", tiny_model,
                        "--template", "chatml", "--device", "cpu", "--max-instruction-tokens", 40, "--seed-int", 3,
                        "--test", seeds)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    assert rep["kept"] == 4 and adds_up(rep) and rep["settings"]["output_first"] is True
    recs = load_dataset(dataset_spec(path=str(out))).records
    assert len(recs) == 4
    seed_sources = {f"{seeds}:{i}" for i in range(1, len(STORIES) + 1)}
    for rec in recs:
        origin = rec.extra["source"]
        assert origin["kind"] == "synthetic" and origin["method"] == "self-instruct"
        assert origin["generator"] == tiny_model and set(origin["seed_rows"]) <= seed_sources
        prompt, answer = rec.messages[0]["content"], rec.messages[1]["content"]
        assert prompt.startswith(TASK + "\n") and prompt != TASK + "\n" and answer in ("0", "1")
    assert sorted(r.messages[1]["content"] for r in recs) == ["0", "0", "1", "1"]  # output-first keeps balance
    doctor = rep["doctor"]
    leaks = {f["check"]: f["count"] for f in doctor["findings"] if f["check"].startswith("leakage")}
    assert doctor["rows"] == 4 and leaks == {"leakage_exact": 0, "leakage_near": 0}  # the doctor ran with --test
    report = tmp_path / "synth.report"
    assert json.loads((report / "synth.json").read_text())["kept"] == 4 and (report / "doctor" / "report.md").is_file()


def test_input_first_counts_every_drop_and_never_overwrites(tiny_model, seeds, tmp_path):
    out = tmp_path / "synth.jsonl"
    out.write_text("precious\n")
    result, _ = synth("self-instruct", "--seed", seeds, "--out", out, "--n", 2, "--model", tiny_model)
    assert failed(result, "refusing to overwrite") and out.read_text() == "precious\n"
    out = tmp_path / "second.jsonl"
    result, _ = synth("self-instruct", "--seed", seeds, "--out", out, "--n", 3, "--model", tiny_model, "--template",
                      "chatml", "--device", "cpu", "--input-first", "--max-instruction-tokens", 40,
                      "--max-answer-tokens", 4, "--max-tries", 12)
    rep = json.loads((tmp_path / "second.report" / "synth.json").read_text())
    assert rep["generated"] == 12 and adds_up(rep) and rep["stopped"] == "max tries"
    # a story model does not answer "0" or "1": its answers are dropped as wrong-format or over-long
    assert rep["kept"] == 0 and {"wrong_format", "answer_too_long"} & set(rep["dropped"])
    assert failed(result, "no synthetic rows were kept") and not out.exists()


def test_templates_with_generated_answers(tiny_model, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("slots:\n  animal: [cat, dog, bird]\n  color: [red, blue]\ntemplates:\n"
                    "  - prompt: 'Tell me about a {color} {animal}.'\n"
                    "  - {prompt: 'Name the {animal}.', answer: 'It is a {animal}.'}\n")
    out = tmp_path / "t.jsonl"
    result, rep = synth("templates", "--spec", spec, "--out", out, "--sample", 5, "--seed", 1, "--model",
                        tiny_model, "--template", "chatml", "--device", "cpu", "--max-answer-tokens", 256,
                        "--format", "openai")
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    assert rep["generated"] == 5 and adds_up(rep) and rep["kept"] >= 1
    recs = load_dataset(dataset_spec(path=str(out))).records
    assert len(recs) == rep["kept"]
    generators = {r.extra["source"]["generator"] for r in recs}
    assert generators <= {"template", tiny_model}
    for rec in recs:
        origin = rec.extra["source"]
        assert origin["method"] == "templates" and origin["template"] in (1, 2)
        if origin["template"] == 2:
            assert rec.messages[-1]["content"] == f"It is a {origin['slots']['animal']}."
