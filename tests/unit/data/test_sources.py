"""Raw row readers: every row carries the file and line it came from; bad rows and files name their location."""

from __future__ import annotations

import json

import pytest

from tuneforge.data.sources import is_hub_id, list_files, read_hub, read_rows
from tuneforge.utils.errors import DataError


def rows(path, **kw):
    return list(read_rows(str(path), **kw))


def test_json_array_reports_the_line_each_element_starts_on(tmp_path):
    f = tmp_path / "a.json"
    f.write_text('[\n  {"a": 1,\n   "b": "x\\ny"},\n\n  {"a": 2}, {"a": 3}\n]\n', encoding="utf-8")
    got = rows(f)
    assert [r.data["a"] for r in got] == [1, 2, 3]
    assert [r.line for r in got] == [2, 5, 5]
    assert got[0].source == f"{f}:2"
    assert rows(tmp_path / "a.json")[0].data["b"] == "x\ny"


def test_json_empty_array_and_bom(tmp_path):
    (tmp_path / "e.json").write_text("  [ ]  ")
    assert rows(tmp_path / "e.json") == []
    (tmp_path / "bom.json").write_bytes('\ufeff[{"t": "é"}]'.encode("utf-8"))
    assert rows(tmp_path / "bom.json")[0].data == {"t": "é"}


def test_malformed_json_array_names_file_and_line(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('[\n {"a": 1},\n {"a": 2,,}\n]')
    with pytest.raises(DataError) as e:
        rows(f)
    assert e.value.file == str(f) and e.value.line == 3
    assert f"{f}:3" in str(e.value)


def test_json_element_that_is_not_an_object_is_a_row_error(tmp_path):
    f = tmp_path / "a.json"
    f.write_text('[{"a": 1},\n "oops"]')
    got = rows(f)
    assert got[0].error is None and got[1].data is None
    assert got[1].error.line == 2 and "expected an object" in str(got[1].error)


def test_json_file_holding_json_lines(tmp_path):
    f = tmp_path / "lines.json"
    f.write_text('{"a": 1}\n{"a": 2}\n')
    assert [(r.data["a"], r.line) for r in rows(f)] == [(1, 1), (2, 2)]


def test_json_file_with_one_pretty_printed_object_is_refused_clearly(tmp_path):
    f = tmp_path / "obj.json"
    f.write_text('{\n  "instruction": "q",\n  "output": "a"\n}\n')
    with pytest.raises(DataError, match="expected a JSON array"):
        rows(f)
    (tmp_path / "one.json").write_text('{"a": 1}\n')
    assert rows(tmp_path / "one.json")[0].data == {"a": 1}


def test_jsonl_physical_lines_blank_lines_skipped_malformed_line_located(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"a": 1}\n\n   \n{"a": 2\n{"a": 3}\n')
    got = rows(f)
    assert [r.line for r in got] == [1, 4, 5]
    bad = got[1]
    assert bad.data is None and bad.error.file == str(f) and bad.error.line == 4
    assert f"{f}:4" in str(bad.error) and "malformed JSON" in str(bad.error)
    assert got[2].data == {"a": 3}


def test_csv_rows_are_strings_and_lines_point_at_record_start(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text('instruction,output\nhi,"multi\nline"\n\nbye,ok\nonly-one-cell\n', encoding="utf-8")
    got = rows(f)
    assert got[0].data == {"instruction": "hi", "output": "multi\nline"} and got[0].line == 2
    assert got[1].data == {"instruction": "bye", "output": "ok"} and got[1].line == 5
    assert got[2].error is not None and got[2].line == 6 and "header has 2" in str(got[2].error)


def test_parquet_rows_numbered_from_one(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "n": [1, 2, 3]}), f)
    got = rows(f)
    assert [(r.data["text"], r.data["n"], r.line) for r in got] == [("a", 1, 1), ("b", 2, 2), ("c", 3, 3)]


def test_txt_each_non_blank_line_is_a_text_row(tmp_path):
    f = tmp_path / "d.txt"
    f.write_text("first line\n\n  second  \r\nthird")
    got = rows(f)
    assert [r.data for r in got] == [{"text": "first line"}, {"text": "  second  "}, {"text": "third"}]
    assert [r.line for r in got] == [1, 3, 4]


def test_folder_reads_supported_files_sorted_and_ignores_others(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"text": "b"}\n')
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "c.csv").write_text("text\nc\n")
    (tmp_path / "README.md").write_text("# not data")
    (tmp_path / ".hidden.json").write_text("[{}]")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "z.txt").write_text("nested, not read")
    assert [p.name for p in list_files(tmp_path)] == ["a.txt", "b.jsonl", "c.csv"]
    assert [r.data["text"] for r in rows(tmp_path)] == ["a", "b", "c"]


def test_missing_path_unsupported_suffix_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        rows(tmp_path / "nope.json")
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(DataError, match="unsupported file type"):
        rows(tmp_path / "x.xlsx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no supported data files"):
        rows(tmp_path / "empty")


def test_hub_id_detection(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("llamafactory/alpaca_en") and is_hub_id("wiki_qa")
    assert not is_hub_id("data.json") and not is_hub_id("/abs/folder") and not is_hub_id("some dir/x")
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "name").mkdir()
    assert not is_hub_id("owner/name")  # an existing local folder wins over a hub id


def test_hub_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError) as e:
        list(read_rows("tuneforge-test/definitely-not-cached"))
    msg = str(e.value)
    assert "tuneforge-test/definitely-not-cached" in msg and "offline" in msg
    assert "local" in msg  # says how to point at a local file instead


def test_hub_rows_go_through_datasets_load_dataset(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(repo, name=None, split=None, data_dir=None):
        calls.append((repo, name, split, data_dir))
        return datasets.Dataset.from_list([{"text": "x"}, {"text": "y"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    got = list(read_hub("org/ds", split="validation", subset="en", folder="python"))
    assert calls == [("org/ds", "en", "validation", "python")]
    assert [r.data for r in got] == [{"text": "x"}, {"text": "y"}]
    assert got[1].source == "hub:org/ds/en[validation]:2"
    json.dumps([r.data for r in got])  # plain Python values, not arrow objects
