"""The data cache: rendered once into Arrow shards, found again by key, identical to rendering in memory."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from tuneforge.config.load import load_config
from tuneforge.data.cache import DataCache, cache_root
from tuneforge.data.templates import ensure_chat_template
from tuneforge.models.load import load_tokenizer
from tuneforge.models.source import resolve_model
from tuneforge.stages import stage_and_params
from tuneforge.train import data_prep, render_shards
from tuneforge.train.data_prep import _prepare_in_memory, prepare_data
from tuneforge.utils.errors import DataError


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    t = load_tokenizer(resolve_model(str(tiny_model_dir)))
    ensure_chat_template(t, "chatml")
    return t


def _cfg(tmp_path, model_dir, data_file, *over):
    return load_config(None, [f"model.name={model_dir}", "model.template=chatml", f"data.train={data_file}",
                              f"data.cache_dir={tmp_path / 'cache'}", "data.cutoff_len=128", *over])


def _rows(tmp_path, n=300, name="d.jsonl"):
    f = tmp_path / name
    rows = [{"instruction": f"question {i} " + "word " * (i % 37), "output": f"answer {i} " + "x " * (i % 53)}
            for i in range(n)]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def _plain(items):
    return [dict(it) for it in items]


@pytest.mark.parametrize("packing", [False, True])
def test_cached_items_equal_the_in_memory_ones_and_a_rerun_reads_no_row(tmp_path, tiny_model_dir, tok, packing,
                                                                          monkeypatch):
    cfg = _cfg(tmp_path, tiny_model_dir, _rows(tmp_path), "data.val_size=0.1", f"data.packing={packing}")
    stage, params = stage_and_params(cfg)
    first = prepare_data(cfg, tok, stage, params)
    ref = _prepare_in_memory(cfg, tok, stage, params)
    assert first.stats["cache"]["hit"] is False
    assert _plain(first.train) == ref.train and _plain(first.val) == ref.val
    assert first.stats["train"] == ref.stats["train"] and first.n_train_rows == ref.n_train_rows == 270
    assert [r.source for r in first.val_records] == [r.source for r in ref.val_records]
    assert first.train.lengths() == [len(it["input_ids"]) for it in ref.train]

    def no_reading(*a, **k):
        raise AssertionError("a cache hit must not read the rows")

    monkeypatch.setattr(data_prep, "load_train_records", no_reading)
    again = prepare_data(cfg, tok, stage, params)
    assert again.stats["cache"]["hit"] is True and _plain(again.train) == ref.train
    assert again.datasets == first.datasets and again.stats["train"] == first.stats["train"]


def test_parallel_rendering_gives_the_same_shards_in_order(tmp_path, tiny_model_dir, tok, monkeypatch):
    monkeypatch.setattr(render_shards, "CHUNK_ROWS", 64)
    f = _rows(tmp_path, n=500)
    one = _cfg(tmp_path, tiny_model_dir, f, "data.num_proc=1", "data.cache=false")
    two = _cfg(tmp_path, tiny_model_dir, f, "data.num_proc=2", "data.cache=false")
    stage, params = stage_and_params(one)
    a, b = prepare_data(one, tok, stage, params), prepare_data(two, tok, stage, params)
    assert a.stats["num_proc"] == 1 and b.stats["num_proc"] == 2
    assert len(b.train.dataset.cache_files) == 8  # 500 rows in chunks of 64
    assert _plain(a.train) == _plain(b.train) and a.stats["train"] == b.stats["train"]
    assert not list((tmp_path / "cache").glob("[0-9a-f]*")), "data.cache=false keeps no entry"


def test_the_key_follows_data_bytes_settings_template_and_code(tmp_path, tiny_model_dir, tok, monkeypatch):
    f = _rows(tmp_path)
    cfg = _cfg(tmp_path, tiny_model_dir, f)
    stage, params = stage_and_params(cfg)
    keys = {prepare_data(cfg, tok, stage, params).stats["cache"]["key"]}
    keys.add(prepare_data(_cfg(tmp_path, tiny_model_dir, f, "data.cutoff_len=64"), tok, stage, params)
             .stats["cache"]["key"])
    f.write_text(f.read_text().replace("answer 7 ", "answer seven "))
    keys.add(prepare_data(cfg, tok, stage, params).stats["cache"]["key"])
    other = load_tokenizer(resolve_model(str(tiny_model_dir)))
    ensure_chat_template(other, "llama3")
    keys.add(prepare_data(cfg, other, stage, params).stats["cache"]["key"])
    monkeypatch.setattr("tuneforge.data.cache.RENDER_MODULES", ("tuneforge.data.render",))
    keys.add(prepare_data(cfg, tok, stage, params).stats["cache"]["key"])
    assert len(keys) == 5
    assert len(DataCache(cache_root(str(tmp_path / "cache"))).entries()) == 5


def test_the_same_data_from_another_process_finds_the_entry(tmp_path, tiny_model_dir, tok):
    data = _rows(tmp_path)
    cfg = _cfg(tmp_path, tiny_model_dir, data)
    key = prepare_data(cfg, tok, *stage_and_params(cfg)).stats["cache"]["key"]
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": str(tiny_model_dir), "template": "chatml"},
                                      "data": {"train": str(data), "cache_dir": str(tmp_path / "cache"),
                                               "cutoff_len": 128}}))
    out = subprocess.run([sys.executable, "-m", "tuneforge", "data", "prepare", str(config), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert (summary["key"], summary["hit"], summary["rows"]) == (key, True, 300)


def test_a_bad_row_in_a_worker_names_its_line_and_leaves_no_entry(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(render_shards, "CHUNK_ROWS", 64)
    template = tmp_path / "plain.jinja"  # a template that ignores tool schemas: a row with tools is refused
    template.write_text("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}</s>{% endfor %}"
                        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    f = tmp_path / "tools.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    bad = {**good, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}
    f.write_text("".join(json.dumps(bad if i == 150 else good) + "\n" for i in range(200)))
    cfg = _cfg(tmp_path, tiny_model_dir, f, "data.num_proc=2", f"model.template={template}")
    t = load_tokenizer(resolve_model(str(tiny_model_dir)))
    ensure_chat_template(t, str(template))
    with pytest.raises(DataError) as err:
        prepare_data(cfg, t, *stage_and_params(cfg))
    assert f"{f}:151" in str(err.value) and "tools" in str(err.value)
    assert not DataCache(tmp_path / "cache").entries()
    assert not any((tmp_path / "cache" / ".staging").iterdir())


def test_an_interrupted_render_leaves_no_entry_and_the_next_run_renders(tmp_path, tiny_model_dir, tok, monkeypatch):
    cfg = _cfg(tmp_path, tiny_model_dir, _rows(tmp_path))
    stage, params = stage_and_params(cfg)
    real = render_shards.render_to_shards

    def interrupted(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(render_shards, "render_to_shards", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(cfg, tok, stage, params)
    cache = DataCache(tmp_path / "cache")
    assert not cache.entries() and not any((tmp_path / "cache" / ".staging").iterdir())
    monkeypatch.setattr(render_shards, "render_to_shards", real)
    assert prepare_data(cfg, tok, stage, params).stats["cache"]["hit"] is False


def test_stale_staging_folders_are_cleaned(tmp_path):
    cache = DataCache(tmp_path)
    old = cache.staging("abc")
    (old / "train-00000.arrow").write_bytes(b"x")
    fresh = cache.staging("def")
    past = time.time() - 7200
    import os

    os.utime(old, (past, past))
    cache.clean_staging()
    assert not old.exists() and fresh.exists()


def test_file_digests_are_remembered_until_a_file_changes(tmp_path, monkeypatch):
    from tuneforge.data import cache as cache_mod

    f = _rows(tmp_path, n=50)
    memo = tmp_path / "cache" / cache_mod.DIGESTS
    first = cache_mod.files_digest([f], memo=memo)
    assert first == cache_mod.files_digest([f])  # the memo never changes the digest

    def no_reading(*args, **kwargs):
        raise AssertionError("the bytes were read again")

    with monkeypatch.context() as m:
        m.setattr(cache_mod, "open", no_reading, raising=False)
        assert cache_mod.files_digest([f], memo=memo) == first
    text = f.read_text()
    f.write_text(text.replace("answer 7 ", "answer 8 "))  # same size, other bytes
    assert f.stat().st_size == len(text.encode())
    changed = cache_mod.files_digest([f], memo=memo)
    assert changed != first and changed == cache_mod.files_digest([f])


def test_rows_spilled_for_the_workers_render_alike_and_leave_no_file(tmp_path, tiny_model_dir, tok, monkeypatch):
    """With several processes the parent hands its rows to the workers through a file, not forked objects."""
    monkeypatch.setattr(render_shards, "CHUNK_ROWS", 64)
    f = _rows(tmp_path, n=300)
    cfg = _cfg(tmp_path, tiny_model_dir, f, "data.num_proc=2")
    stage, params = stage_and_params(cfg)
    spilled = []
    real = render_shards.SpilledRows

    def watched(records, path):
        rows = real(records, path)
        spilled.append((len(rows), path))
        return rows

    monkeypatch.setattr(render_shards, "SpilledRows", watched)
    a = prepare_data(cfg, tok, stage, params)
    assert spilled and spilled[0][0] == 300 and a.n_train_rows == 300
    assert not spilled[0][1].exists() and not list((tmp_path / "cache").rglob("*.pickles"))
    memory = _prepare_in_memory(_cfg(tmp_path, tiny_model_dir, f, "data.cache=false"), tok, stage, params)
    assert _plain(a.train) == _plain(memory.train)


@pytest.mark.timeout(120)
def test_workers_finish_and_exit_whatever_sigterm_handler_the_parent_holds(tmp_path, tiny_model_dir, tok):
    """A trainer's stop handler or a library's (ray installs one) is inherited by forked workers: they still exit."""
    import multiprocessing
    import signal

    f = _rows(tmp_path, n=300)
    cfg = _cfg(tmp_path, tiny_model_dir, f, "data.num_proc=2", "data.cache=false")
    stage, params = stage_and_params(cfg)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        for _ in range(6):
            render_shards.CHUNK_ROWS, before = 32, render_shards.CHUNK_ROWS
            try:
                assert prepare_data(cfg, tok, stage, params).n_train_rows == 300
            finally:
                render_shards.CHUNK_ROWS = before
            assert not multiprocessing.active_children()
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.timeout(120)
def test_a_worker_killed_midway_is_a_clear_error_not_a_hang(tmp_path, tiny_model_dir, tok, monkeypatch):
    import os
    import signal

    monkeypatch.setattr(render_shards, "CHUNK_ROWS", 64)
    cfg = _cfg(tmp_path, tiny_model_dir, _rows(tmp_path, n=300), "data.num_proc=2", "data.cache=false")
    stage, params = stage_and_params(cfg)
    real = type(stage).prepare

    def dies_on_the_third_chunk(self, rows, *a, **k):
        if any(r.source.endswith(":150") for r in rows):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, rows, *a, **k)

    monkeypatch.setattr(type(stage), "prepare", dies_on_the_third_chunk)
    with pytest.raises(DataError) as err:
        prepare_data(cfg, tok, stage, params)
    assert "worker died" in str(err.value) and "data.num_proc" in err.value.hint
