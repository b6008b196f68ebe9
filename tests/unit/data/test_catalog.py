"""Dataset loading end to end: sources + formats + registry, error policy, mixing, splitting, fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.data.catalog import (DatasetSpec, fingerprint, load_dataset, load_datasets, read_dataset_info,
                                    register_dataset, split_train_val)
from tuneforge.data.records import Record
from tuneforge.utils.errors import DataError

# Row counts from shared/data/SOURCES.md
DEMO_COUNTS = {"alpaca_en_demo": 999, "alpaca_zh_demo": 1000, "identity": 91, "glaive_toolcall_en_demo": 300,
               "glaive_toolcall_zh_demo": 300, "dpo_en_demo": 300, "dpo_zh_demo": 300, "kto_en_demo": 300,
               "c4_demo": 300, "wiki_demo": 30}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def alpaca_rows(n, prefix="q"):
    return [{"instruction": f"{prefix}{i}", "input": "", "output": f"a{i}"} for i in range(n)]


# --- local files through load_dataset -----------------------------------------------------------------------------

def test_every_local_file_type_loads(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d.csv").write_text("instruction,input,output,category\nQ,,A,books\n", encoding="utf-8")
    pq.write_table(pa.table({"instruction": ["Q"], "output": ["A"]}), tmp_path / "d.parquet")
    (tmp_path / "d.txt").write_text("doc one\n\ndoc two\n")
    write_jsonl(tmp_path / "d.jsonl", [{"text": "t"}])
    csv_res = load_dataset(DatasetSpec(path=str(tmp_path / "d.csv")))
    assert csv_res.records[0].messages[-1]["content"] == "A" and csv_res.records[0].extra == {"category": "books"}
    assert csv_res.records[0].source.endswith("d.csv:2") and csv_res.name == "d" and csv_res.format == "alpaca"
    assert load_dataset(DatasetSpec(path=str(tmp_path / "d.parquet"))).fingerprint == csv_res.fingerprint
    txt = load_dataset(DatasetSpec(path=str(tmp_path / "d.txt")))
    assert [r.text for r in txt.records] == ["doc one", "doc two"] and txt.format == "text"
    assert load_dataset(DatasetSpec(path=str(tmp_path / "d.jsonl"))).records[0].text == "t"


def test_folder_source(tmp_path):
    write_jsonl(tmp_path / "part-b.jsonl", alpaca_rows(2, "b"))
    (tmp_path / "part-a.json").write_text(json.dumps(alpaca_rows(3, "a")))
    res = load_dataset(DatasetSpec(path=str(tmp_path)))
    assert [r.messages[0]["content"] for r in res.records] == ["a0", "a1", "a2", "b0", "b1"]
    assert res.name == tmp_path.name


def test_errors_raise_with_location_or_are_skipped(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q"\n{"instruction": "q"}\n'
                 '{"instruction": "q", "output": 3}\n{"instruction": "q2", "output": "a2"}\n')
    with pytest.raises(DataError) as e:
        load_dataset(DatasetSpec(path=str(f)))
    assert e.value.file == str(f) and e.value.line == 2
    res = load_dataset(DatasetSpec(path=str(f)), on_error="skip")
    assert len(res.records) == 2 and len(res.skipped) == 3
    assert [(s.line, s.field) for s in res.skipped] == [(2, None), (3, "output"), (4, "output")]
    with pytest.raises(DataError, match="on_error"):
        load_dataset(DatasetSpec(path=str(f)), on_error="ignore")


def test_max_samples_stops_before_later_bad_rows(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", alpaca_rows(3) + [{"instruction": "q"}])
    res = load_dataset(DatasetSpec(path=str(f), max_samples=2))
    assert [r.messages[0]["content"] for r in res.records] == ["q0", "q1"]


def test_nothing_usable_is_an_error_that_says_why(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "q", "output": ""}, {"instruction": "q", "output": " "}])
    with pytest.raises(DataError) as e:
        load_dataset(DatasetSpec(path=str(f)), on_error="skip")
    assert "no usable rows" in str(e.value) and "2 skipped because" in str(e.value)
    assert "empty assistant answer" in str(e.value)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no usable rows"):
        load_dataset(DatasetSpec(path=str(tmp_path / "empty.jsonl")))


def test_spec_needs_exactly_one_of_name_and_path():
    with pytest.raises(DataError, match="exactly one"):
        load_dataset({})
    with pytest.raises(DataError, match="exactly one"):
        load_dataset({"name": "a", "path": "b"})
    with pytest.raises(DataError, match="field 'format'"):
        load_dataset({"path": "a.jsonl", "format": "alpacca"})


def test_one_dataset_spec_class_for_config_and_data(tmp_path):
    from tuneforge.config.load import load_config
    from tuneforge.config.schema import DatasetEntry

    assert DatasetSpec is DatasetEntry
    f = tmp_path / "d.jsonl"
    f.write_text('{"instruction": "q", "output": "a"}\n')
    entry = load_config(None, [f"data.train=[{{path: {f}, max_samples: 1}}]"]).data.train[0]
    assert load_dataset(entry).records[0].messages[-1]["content"] == "a"


# --- registry -----------------------------------------------------------------------------------------------------

def test_all_local_llamafactory_demo_sets_load_through_their_registry(demo_data):
    info = demo_data / "llamafactory_demo" / "dataset_info.llamafactory.json"
    expected_format = {"glaive_toolcall_en_demo": "sharegpt", "dpo_en_demo": "sharegpt+pairwise",
                       "kto_en_demo": "sharegpt+kto", "c4_demo": "text", "wiki_demo": "text", "identity": "alpaca"}
    for name, count in DEMO_COUNTS.items():
        res = load_dataset(DatasetSpec(name=name), dataset_info=info)
        assert len(res.records) == count, name
        assert res.skipped == [] and res.name == name
        if name in expected_format:
            assert res.format == expected_format[name], name
    tool = load_dataset(DatasetSpec(name="glaive_toolcall_en_demo", max_samples=5), dataset_info=info).records
    # rows with "tools": "[]" carry no tools (None); the others a list of schemas
    assert [bool(r.tools) for r in tool] == [True, False, False, True, False]
    assert all(t["name"] for r in tool for t in r.tools or [])
    assert any(m["role"] == "function_call" for r in tool for m in r.messages)
    kto = load_dataset(DatasetSpec(name="kto_en_demo"), dataset_info=info).records
    assert {r.label for r in kto} == {True, False}


def test_multimodal_demo_is_refused_with_the_reason(demo_data):
    info = demo_data / "llamafactory_demo" / "dataset_info.llamafactory.json"
    with pytest.raises(DataError, match="multimodal .*images") as e:
        load_dataset(DatasetSpec(name="mllm_demo"), dataset_info=info)
    assert e.value.field == "mllm_demo.columns" and e.value.file == str(info)


def test_hub_entry_offline_error_is_clear(demo_data, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = demo_data / "llamafactory_demo" / "dataset_info.llamafactory.json"
    with pytest.raises(DataError) as e:
        load_dataset(DatasetSpec(name="glaive_toolcall_en"), dataset_info=info)
    assert "llamafactory/glaive_toolcall_en" in str(e.value) and "offline" in str(e.value)
    assert "local" in e.value.hint


def test_sentiment_extra_column_kept(demo_data):
    res = load_dataset(DatasetSpec(path=str(demo_data / "sentiment_zh" / "dev.jsonl")))
    assert len(res.records) == 1000 and res.records[0].extra.keys() == {"category"}
    assert res.records[0].messages[-1]["content"] in ("0", "1")


def test_register_then_load_by_name_relative_to_registry(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "qa.jsonl", [{"question": "Q", "answer": "A"}])
    info = register_dataset("qa", {"file_name": "qa.jsonl", "columns": {"prompt": "question", "response": "answer"}},
                            tmp_path)
    assert info == tmp_path / "dataset_info.json"
    monkeypatch.chdir(tmp_path.parent)  # file_name is resolved against the registry folder, not the cwd
    res = load_dataset(DatasetSpec(name="qa"), dataset_info=tmp_path)
    assert res.records[0].messages == [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    monkeypatch.setenv("TUNEFORGE_DATASET_INFO", str(info))
    assert load_dataset(DatasetSpec(name="qa")).fingerprint == res.fingerprint
    with pytest.raises(DataError, match="already registered"):
        register_dataset("qa", {"file_name": "other.jsonl"}, info)
    register_dataset("qa", {"file_name": "other.jsonl"}, info, overwrite=True)
    assert read_dataset_info(info)["qa"] == {"file_name": "other.jsonl"}
    with pytest.raises(DataError, match="did you mean 'file_name'"):
        register_dataset("x", {"filename": "a.json"}, info)
    with pytest.raises(DataError, match="names no data"):
        register_dataset("x", {"formatting": "sharegpt"}, info)
    with pytest.raises(DataError, match="did you mean qa"):
        load_dataset(DatasetSpec(name="qaa"), dataset_info=info)


def test_name_without_registry_and_unsupported_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNEFORGE_DATASET_INFO", raising=False)
    with pytest.raises(DataError, match="needs a registry"):
        load_dataset(DatasetSpec(name="alpaca"))
    register_dataset("ms", {"ms_hub_url": "AI-ModelScope/x"}, tmp_path)
    with pytest.raises(DataError, match="only available via ms_hub_url"):
        load_dataset(DatasetSpec(name="ms"), dataset_info=tmp_path)


def test_registry_num_samples_resamples_deterministically(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", alpaca_rows(4))
    register_dataset("up", {"file_name": "d.jsonl", "num_samples": 10}, tmp_path)
    register_dataset("down", {"file_name": "d.jsonl", "num_samples": 2}, tmp_path)
    up = load_dataset(DatasetSpec(name="up"), dataset_info=tmp_path)
    assert len(up.records) == 10 and {r.messages[0]["content"] for r in up.records} == {"q0", "q1", "q2", "q3"}
    down = [load_dataset(DatasetSpec(name="down"), dataset_info=tmp_path, seed=s).fingerprint for s in (1, 1)]
    assert down[0] == down[1]


# --- mixing, splitting, fingerprints ------------------------------------------------------------------------------

def test_mixing_ratio_and_interleave_are_deterministic(tmp_path):
    a = str(write_jsonl(tmp_path / "a.jsonl", alpaca_rows(10, "a")))
    b = str(write_jsonl(tmp_path / "b.jsonl", alpaca_rows(4, "b")))
    specs = [DatasetSpec(path=a, ratio=0.5), {"path": b, "ratio": 2.0}]
    first = load_datasets(specs, seed=3)
    heads = [r.messages[0]["content"][0] for r in first.records]
    assert heads.count("a") == 5 and heads.count("b") == 8 and first.name == "a+b"
    assert load_datasets(specs, seed=3).fingerprint == first.fingerprint
    assert len({load_datasets(specs, seed=s).fingerprint for s in range(5)}) > 1
    inter = load_datasets([DatasetSpec(path=a, max_samples=3), DatasetSpec(path=b)], mix="interleave")
    assert [r.messages[0]["content"] for r in inter.records] == ["a0", "b0", "a1", "b1", "a2", "b2", "b3"]
    capped = load_datasets([DatasetSpec(path=a), DatasetSpec(path=b)], max_samples=6, seed=0)
    assert len(capped.records) == 6
    assert capped.fingerprint == load_datasets([DatasetSpec(path=a), DatasetSpec(path=b)], max_samples=6,
                                               seed=0).fingerprint
    with pytest.raises(DataError, match="unknown mix mode"):
        load_datasets([DatasetSpec(path=a)], mix="shuffle")
    with pytest.raises(DataError, match="did you mean 'ratio'"):
        load_datasets([{"path": a, "ration": 1}])


def test_split_is_deterministic_and_disjoint():
    recs = [Record(text=str(i)) for i in range(20)]
    train, val = split_train_val(recs, 0.25, seed=7)
    assert len(val) == 5 and len(train) == 15
    assert {r.text for r in train} | {r.text for r in val} == {str(i) for i in range(20)}
    assert split_train_val(recs, 0.25, seed=7) == (train, val)
    assert split_train_val(recs, 0.25, seed=8)[1] != val
    assert len(split_train_val(recs, 3, seed=0)[1]) == 3
    assert split_train_val(recs, 0, seed=0) == (recs, [])
    with pytest.raises(DataError, match="leaves no training rows"):
        split_train_val(recs, 20, seed=0)


def test_fingerprint_same_content_any_format_and_sensitive_to_one_char(tmp_path):
    alpaca = tmp_path / "a.json"
    alpaca.write_text(json.dumps([{"instruction": "Hi", "input": "", "output": "Hello!", "system": "Be nice"},
                                  {"instruction": "2+2?", "output": "4"}]))
    msgs = write_jsonl(tmp_path / "m.jsonl", [
        {"messages": [{"role": "system", "content": "Be nice"}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello!"}]},
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], "id": "x"}])
    fa = load_dataset(DatasetSpec(path=str(alpaca))).fingerprint
    fm = load_dataset(DatasetSpec(path=str(msgs))).fingerprint
    assert fa == fm and len(fa) == 64
    alpaca.write_text(alpaca.read_text().replace("Hello!", "Hello."))
    assert load_dataset(DatasetSpec(path=str(alpaca))).fingerprint != fm
    recs = load_dataset(DatasetSpec(path=str(msgs))).records
    assert fingerprint(recs[::-1]) != fingerprint(recs)  # documented: order-sensitive
