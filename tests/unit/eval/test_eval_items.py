"""Benchmark files: schema errors name file, line and field; original formats read the same items as the normalized
jsonl; task resolution, --limit sampling and few-shot selection."""

import json

import pytest

from tuneforge.eval.formats import read_items
from tuneforge.eval.items import read_normalized
from tuneforge.eval.tasks import BUILTINS, fewshot_examples, load_task
from tuneforge.utils.errors import DataError

GOOD = {"id": "q1", "question": "2+2?", "choices": ["3", "4"], "answer": 1, "subject": "math"}


def _write(tmp_path, rows, name="bench.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return p


@pytest.mark.parametrize("bad,field", [
    ({"id": "q3", "choices": ["a", "b"], "answer": 0}, "question"),
    ({"id": "q3", "question": "x", "choices": ["a", "b"], "answer": 2}, "answer"),
    ({"id": "q3", "question": "x", "choices": ["a", "b"], "answer": True}, "answer"),
    ({"id": "q3", "question": "x", "choices": "a,b", "answer": 0}, "choices"),
    ({"id": "q3", "question": "x", "choices": ["a", ""], "answer": 0}, "choices"),
    ({"id": "q3", "question": "x", "choices": ["a", "b"]}, "answer"),
    ({"id": "q3", "question": 7, "choices": ["a", "b"], "answer": 0}, "question"),
    ({"id": "q1", "question": "x", "choices": ["a", "b"], "answer": 0}, "id"),  # duplicate id
    ({"id": "q3", "question": "x", "answer": "4"}, "choices"),  # generative row among multiple-choice rows
])
def test_schema_errors_name_file_line_field(tmp_path, bad, field):
    p = _write(tmp_path, [GOOD, {**GOOD, "id": "q2"}, bad])
    with pytest.raises(DataError) as e:
        read_normalized(p)
    err = e.value
    assert (err.file, err.line, err.field) == (str(p), 3, field)
    assert f"{p}:3 field '{field}'" in str(err)


def test_bad_json_names_the_line(tmp_path):
    p = _write(tmp_path, [GOOD, '{"id": "q2", "question": '])
    with pytest.raises(DataError) as e:
        read_items(p)
    assert (e.value.file, e.value.line) == (str(p), 2)


def test_generative_rows_and_letter_answers(tmp_path):
    p = _write(tmp_path, [{"question": "1+1?", "answer": 2}, {"question": "2+2?", "answer": "4"}])
    items = read_items(p)
    assert [it.answer for it in items] == ["2", "4"] and not items[0].is_mc
    assert items[0].id == "line-1" and items[0].subject == tmp_path.name
    q = _write(tmp_path, [{**GOOD, "answer": "B"}], "letters.jsonl")
    assert read_items(q)[0].answer == 1


def test_original_format_errors(tmp_path):
    arc = _write(tmp_path, [{"id": "x", "question": {"stem": "?", "choices": [{"text": "a", "label": "A"},
                                                                             {"text": "b", "label": "B"}]},
                             "answerKey": "C"}], "arc.jsonl")
    with pytest.raises(DataError) as e:
        read_items(arc)
    assert (e.value.line, e.value.field) == (1, "answerKey")
    folder = tmp_path / "mmlu"
    folder.mkdir()
    (folder / "anatomy_test.csv").write_text("q,a,b,c,d,A\nq2,a,b,c,d,E\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_items(folder)
    assert (e.value.file, e.value.line, e.value.field) == (str(folder / "anatomy_test.csv"), 2, "answer")


def test_unknown_task_and_missing_file():
    with pytest.raises(DataError, match="unknown task 'mmlx'"):
        load_task("mmlx")


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_original_formats_match_normalized(shared, name):
    a, b = load_task(name), load_task(name, source="original")

    def key(it):
        subject = "" if name == "truthfulqa_mc1" else it.subject  # category is not in mc_task.json
        choices = tuple(sorted(c.strip() for c in it.choices)) if it.choices else None
        return it.question.strip(), subject, it.gold.strip(), choices

    assert sorted(map(key, a.items)) == sorted(map(key, b.items))
    assert len(a.pool) == len(b.pool)


def test_limit_is_a_fixed_sample_and_fewshot_never_leaks(shared):
    t1, t2 = load_task("mmlu", limit=20), load_task("mmlu", limit=20)
    assert [i.id for i in t1.items] == [i.id for i in t2.items]
    assert len({i.subject for i in t1.items}) > 5  # spread over subjects, not the first 20 rows
    item = t1.items[0]
    shots = fewshot_examples(t1, item, 5)
    assert len(shots) == 5 and all(s.subject == item.subject for s in shots)
    hs = load_task("hellaswag", limit=30)  # no dev split: shots come from the test items, never the item itself
    for it in hs.items[:5]:
        assert it.id not in {s.id for s in fewshot_examples(hs, it, 3)}
    assert load_task("mmlu").mapping["anatomy"]["category"] == "Other"
