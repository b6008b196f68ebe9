"""Dataset doctor: each finding on small hand-made files with planted problems; --fix never touches its input."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
from typer.testing import CliRunner

from tuneforge.cli.data_cmd import app
from tuneforge.data.doctor.check import check_dataset
from tuneforge.data.doctor.fix import write_fixed
from tuneforge.data.doctor.minhash import MinHasher, cross_pairs, near_pairs, shingles
from tuneforge.data.doctor.report import write_report
from tuneforge.data.doctor.result import CheckOptions
from tuneforge.data.doctor.text import script_of
from tuneforge.utils.errors import DataError

INSTR = "Classify the sentiment of this review."
LONG = ("The hotel room was spacious and clean, the staff at the front desk were friendly and helpful, "
        "breakfast had plenty of choice, and the location near the station made every trip easy.")
ZH = "这家酒店的房间很干净，服务员态度非常好，早餐种类丰富，离地铁站很近，出行很方便，下次还会再来住。"
REVIEWS = [f"review number {w} about a {w} product that I bought last {d}" for w, d in
           [("one", "monday"), ("two", "tuesday"), ("three", "week"), ("four", "month"), ("five", "year"),
            ("six", "spring"), ("seven", "summer"), ("eight", "winter")]]


def _row(text, out="1", **kw):
    return {"instruction": INSTR, "input": text, "output": out, **kw}


def _planted_rows():
    """(line, content) of the planted file; line numbers are what the findings must name."""
    rows = [_row(t, str(i % 2)) for i, t in enumerate(REVIEWS)]           # lines 1-8 clean
    rows.append(_row(REVIEWS[0], "0"))                                        # 9: exact duplicate of line 1
    rows.append(_row(LONG, "1"))                                              # 10
    rows.append(_row(LONG.replace("spacious", "large"), "1"))                 # 11: near-duplicate of 10
    rows.append("{not json")                                                  # 12: malformed line
    rows.append({"instruction": INSTR, "input": "no answer here"})            # 13: missing output
    rows.append(_row("fine product", "1", note="   "))                       # 14: whitespace-only field
    rows.append(_row("\ufeffgreat value for money", "1"))                     # 15: BOM inside text
    rows.append(_row("the cafÃ© was nice", "1"))                              # 16: mojibake
    rows.append(_row("broken \ufffd character", "0"))                         # 17: replacement char
    rows.append(_row("nice<br/>product &amp; fast", "1"))                    # 18: HTML
    rows.append(_row(ZH, "1"))                                                # 19: Chinese
    rows.append(_row(ZH.replace("下次还会再来住", "下次一定再来住"), "1"))    # 20: Chinese near-dup of 19
    rows.append(_row("the cafÃ© was nice", "0"))                              # 21: same prompt, other answer
    return rows


def _write_jsonl(path, rows, bom=False):
    text = "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


@pytest.fixture
def planted(tmp_path):
    return _write_jsonl(tmp_path / "train.jsonl", _planted_rows())


@pytest.fixture
def test_set(tmp_path):
    rows = [_row(REVIEWS[3], "1"),                                            # exact leak of train line 4
            _row(LONG.replace("helpful", "kind"), "1"),                      # near leak of lines 10/11
            _row("a completely different sentence about the weather today", "0")]
    return _write_jsonl(tmp_path / "test.jsonl", rows)


@pytest.fixture
def result(planted, test_set):
    return check_dataset(str(planted), CheckOptions(against=str(test_set)))


def _finding(res, check):
    found = [f for f in res.findings if f.check == check]
    assert found, f"no {check} finding in {[f.check for f in res.findings]}"
    return found[0]


def _lines(items, key="source"):
    return sorted(int(x[key].rsplit(":", 1)[1]) for x in items)


def test_schema_errors_name_file_line_and_field(result, planted):
    f = _finding(result, "schema_errors")
    assert f.severity == "error" and f.count == 2
    assert _lines(f.examples) == [12, 13]
    missing = next(x for x in f.examples if x["source"].endswith(":13"))
    assert missing["field"] == "output" and missing["source"] == f"{planted}:13"
    assert result.dataset["rows"] == 21 and result.dataset["usable_rows"] == 19


def test_empty_fields(result):
    f = _finding(result, "empty_fields")
    assert f.count == 1 and f.examples[0]["field"] == "note" and f.examples[0]["source"].endswith(":14")


def test_exact_duplicates_and_conflicting_answers(result):
    f = _finding(result, "exact_duplicates")
    assert f.severity == "error" and f.count == 1
    assert _lines([{"source": s} for s in f.examples[0]["sources"]]) == [1, 9]
    c = _finding(result, "conflicting_answers")  # same prompt, different answer
    assert [_lines([{"source": s} for s in ex["sources"]]) for ex in c.examples] == [[16, 21]]


def test_exact_duplicate_rows(tmp_path):
    rows = [_row(t) for t in REVIEWS] + [_row(REVIEWS[2]), _row("  REVIEW number THREE about a three product "
                                                                 "that I bought last week")]
    res = check_dataset(str(_write_jsonl(tmp_path / "d.jsonl", rows)))
    f = _finding(res, "exact_duplicates")
    assert f.count == 2 and f.examples[0]["sources"][0].endswith(":3")  # case / whitespace do not hide a copy
    assert _lines([{"source": s} for s in res.drops["exact_duplicates"]]) == [9, 10]


def test_near_duplicates_latin_and_chinese(result):
    f = _finding(result, "near_duplicates")
    pairs = {tuple(_lines([{"source": s} for s in ex["sources"]])) for ex in f.examples}
    assert (10, 11) in pairs and (19, 20) in pairs
    assert all(ex["jaccard"] >= 0.8 for ex in f.examples)
    assert not any(1 in p or 9 in p for p in pairs)  # the fixed instruction line does not make rows "similar"


def test_suspicious_content(result):
    assert _lines(_finding(result, "bom_in_text").examples) == [15]
    assert _lines(_finding(result, "mojibake").examples) == [16, 21]
    assert _lines(_finding(result, "replacement_char").examples) == [17]
    assert _lines(_finding(result, "html").examples) == [18]
    assert "<U+FEFF>" in _finding(result, "bom_in_text").examples[0]["text"]


def test_file_bom(tmp_path):
    path = _write_jsonl(tmp_path / "bom.jsonl", [_row(t) for t in REVIEWS], bom=True)
    res = check_dataset(str(path))
    assert _finding(res, "file_bom").count == 1
    assert res.dataset["usable_rows"] == 8  # the loader still reads the file


def test_leakage_exact_and_near(result):
    exact, near = _finding(result, "leakage_exact"), _finding(result, "leakage_near")
    assert exact.severity == "error" and _lines(exact.examples) == [4]
    assert exact.examples[0]["test_source"].endswith("test.jsonl:1")
    assert near.count >= 1 and set(_lines(near.examples)) <= {10, 11}
    assert all(ex["test_source"].endswith("test.jsonl:2") for ex in near.examples)


def test_labels_languages_diversity(result):
    labels = result.stats["labels"]["answers"]
    assert labels == {"1": 12, "0": 7}
    scripts = result.stats["languages"]["scripts"]
    assert scripts["cjk"] == 2 and scripts["latin"] == 17
    div = result.stats["diversity"]
    assert div["fixed_instruction_lines"][0]["line"] == INSTR
    assert 0 < div["distinct"]["instructions"]["distinct_1"] < 1
    assert div["leading_words"][0] == ("review", 9)


def test_label_imbalance_and_low_diversity(tmp_path):
    rows = [_row(f"Write a poem about the {i} th cat", "1" if i % 10 else "0") for i in range(60)]
    res = check_dataset(str(_write_jsonl(tmp_path / "gen.jsonl", rows)))
    assert _finding(res, "label_imbalance").count == 6
    assert _finding(res, "low_diversity").examples[0]["template"] == "write a poem about the 0"


def test_script_detection_is_honest():
    assert script_of("这是中文") == "cjk" and script_of("plain English") == "latin"
    assert script_of("Привет мир") == "cyrillic" and script_of("1234 !!") == "none"
    assert script_of("中文中文中文 mixed words") == "mixed" and script_of("中文 and English words") == "latin"


def test_minhash_finds_similar_and_ignores_unrelated():
    texts = [LONG, LONG.replace("spacious", "roomy"), "something else entirely, about cooking rice at home", ZH]
    assert [(i, j) for i, j, _ in near_pairs(texts)] == [(0, 1)]
    assert [(i, j) for i, j, _ in cross_pairs([ZH, LONG], [ZH[:-1] + "！"])] == [(0, 0)]
    h = MinHasher()
    a, b = h.signature(shingles(LONG)), h.signature(shingles(LONG))
    assert (a == b).all()


def test_report_files(result, tmp_path):
    paths = write_report(result, tmp_path / "report")
    summary = json.loads(paths["json"].read_text())
    assert {f["check"] for f in summary["findings"]} >= {"schema_errors", "near_duplicates", "leakage_exact"}
    assert "schema_errors" in paths["markdown"].read_text() and "<table>" in paths["html"].read_text()
    for chart in ("lengths", "scatter", "labels"):
        assert paths[chart].read_bytes()[:4] == b"\x89PNG"
    width, height = struct.unpack(">II", paths["lengths"].read_bytes()[16:24])  # PNG IHDR
    assert (width, height) == (11 * 110, round(3.6 * 110))  # drawn by tuneforge.utils.plots.figure (house dpi 110)
    assert not [p.name for p in paths["json"].parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_fix_writes_clean_copy_and_never_touches_input(planted, result, tmp_path):
    before = hashlib.sha256(planted.read_bytes()).hexdigest()
    fixed = write_fixed(result, tmp_path / "clean.jsonl", near=True)
    assert hashlib.sha256(planted.read_bytes()).hexdigest() == before
    rows = [json.loads(line) for line in (tmp_path / "clean.jsonl").read_text().splitlines()]
    assert fixed.dropped == {"invalid": 2, "exact_duplicates": 1, "near_duplicates": 2}
    assert fixed.kept == len(rows) == 16
    assert not any("\ufeff" in json.dumps(r, ensure_ascii=False) for r in rows)
    log = [json.loads(line) for line in fixed.log.read_text().splitlines()]
    assert sum(c["action"] == "dropped" for c in log) == 5
    assert any(c["action"] == "edited" and c["fields"] == ["input"] for c in log)
    with pytest.raises(DataError, match="overwrite"):
        write_fixed(result, tmp_path / "clean.jsonl")
    with pytest.raises(DataError, match="overwrite"):
        write_fixed(result, planted)
    assert hashlib.sha256(planted.read_bytes()).hexdigest() == before
    clean = check_dataset(str(tmp_path / "clean.jsonl"))
    assert not {f.check for f in clean.findings} & {"schema_errors", "bom_in_text", "near_duplicates"}


def test_fix_drops_exact_duplicates_and_bom_file(tmp_path):
    src = _write_jsonl(tmp_path / "d.jsonl", [_row(t) for t in REVIEWS] + [_row(REVIEWS[0])], bom=True)
    res = check_dataset(str(src))
    fixed = write_fixed(res, tmp_path / "out.json")
    assert fixed.dropped == {"exact_duplicates": 1}
    assert (tmp_path / "out.json").read_bytes()[:1] == b"["
    assert len(json.loads((tmp_path / "out.json").read_text())) == 8


def test_cli_check_json_and_strict(planted, test_set, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["check", str(planted), "--against", str(test_set), "--report", str(tmp_path / "r"),
                              "--fix", str(tmp_path / "fixed.jsonl"), "--json", "--strict"])
    assert res.exit_code == 1, res.output
    payload = json.loads(res.stdout)
    assert payload["fix"]["kept"] == 18 and (tmp_path / "r" / "report.html").is_file()
    ok = runner.invoke(app, ["check", str(tmp_path / "fixed.jsonl"), "--report", str(tmp_path / "r2")])
    assert ok.exit_code == 0, ok.output


def test_token_lengths_and_truncation(planted, tiny_model_dir):
    res = check_dataset(str(planted), CheckOptions(model=str(tiny_model_dir), template="chatml", cutoff=40))
    tok = res.stats["lengths"]["tokens"]
    assert tok["prompt"]["min"] > 10 and tok["answer"]["min"] >= 1
    f = _finding(res, "truncation")
    assert f.count == res.stats["lengths"]["truncation"]["rows"] and f.count >= 2


def test_registered_name(planted, tmp_path):
    from tuneforge.data.catalog import register_dataset

    info = register_dataset("planted", {"file_name": str(planted)}, tmp_path / "dataset_info.json")
    res = check_dataset("planted", CheckOptions(dataset_info=str(info)))
    assert res.dataset["name"] == "planted" and res.dataset["files"] == [str(planted)]
    assert _finding(res, "schema_errors").count == 2
    with pytest.raises(DataError, match="neither a file"):
        check_dataset("planted")
