"""data.streaming: rows read lazily with the in-memory readers' numbering and errors, the same documents and tokens as
in-memory pt, fixed blocks without attention across documents, disjoint shards, memory that stays flat on a file
far larger than the bound, and the config combinations a stream cannot honour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.config.load import load_config
from tuneforge.data.catalog import DatasetSpec, load_dataset, load_datasets
from tuneforge.data.render import IGNORE
from tuneforge.data.sources import read_jsonl, read_txt
from tuneforge.data.streaming import TokenStream, _file_rows, scan_stream, stream_sources
from tuneforge.utils.errors import ConfigError, DataError

WORDS = ("the cat sat on a warm mat and looked at the garden where small birds sang about the morning sun while "
         "Lily and Tom ran after a red ball").split()


def _docs(n: int) -> list[str]:
    """Documents of varied length (3 to ~90 words), deterministic."""
    return [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(3 + (i * 37) % 90)) for i in range(n)]


def _stream(path: Path, tok, cutoff: int, **kw) -> tuple[TokenStream, object]:
    specs = [DatasetSpec(path=str(p)) for p in (path if isinstance(path, list) else [path])]
    scan = scan_stream(stream_sources(specs), mix=kw.pop("mix", "concat"), on_error=kw.pop("on_error", "raise"))
    return TokenStream(scan.sources, tok, cutoff, **kw), scan


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from tuneforge.models.load import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


# ---- rows ------------------------------------------------------------------------------------------------------

def test_rows_are_numbered_and_read_as_the_in_memory_readers_do(tmp_path):
    text = "\ufefffirst\r\nsecond\n\n  \nthird\u2028fourth\rfifth\n"
    txt = tmp_path / "a.txt"
    txt.write_text(text, encoding="utf-8")
    lazy = [(r.line, r.parse().data) for r in _file_rows(txt)]
    assert lazy == [(r.line, r.data) for r in read_txt(txt)]
    assert [n for n, _ in lazy] == [1, 2, 5, 6, 7]
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"text": "a"}\n\n{"text": \n[1]\n{"text": "b"}\n', encoding="utf-8")
    lazy = [r.parse() for r in _file_rows(jsonl)]
    eager = list(read_jsonl(jsonl))
    assert [(r.line, r.data, str(r.error)) for r in lazy] == [(r.line, r.data, str(r.error)) for r in eager]


def test_a_non_utf8_byte_is_reported_with_its_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nalso fine\nbroken \xff here\n")
    with pytest.raises(DataError, match=r"bad.txt:3: not UTF-8"):
        list(_file_rows(bad))


def test_a_json_array_is_refused_with_the_way_out(tmp_path):
    arr = tmp_path / "rows.json"
    arr.write_text(json.dumps([{"text": "a"}]), encoding="utf-8")
    with pytest.raises(DataError, match="JSON array cannot be streamed") as err:
        list(_file_rows(arr))
    assert ".jsonl" in err.value.hint


def test_the_scan_fails_on_a_bad_row_with_file_and_line_or_counts_it(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "one"}\n{"text": "two"}\n{"text": 3\n{"text": "four"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c.jsonl:3: malformed JSON line"):
        scan_stream(stream_sources([DatasetSpec(path=str(path))]))
    scan = scan_stream(stream_sources([DatasetSpec(path=str(path))]), on_error="skip")
    assert (scan.rows, scan.documents, scan.skipped) == (4, 3, 1)
    assert "c.jsonl:3" in scan.skipped_examples[0]


def test_the_scan_gives_the_in_memory_fingerprint_and_first_rows(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.jsonl"
    a.write_text("\n".join(_docs(7)) + "\n", encoding="utf-8")
    b.write_text("".join(json.dumps({"text": d}) + "\n" for d in _docs(4)[::-1]), encoding="utf-8")
    specs = [DatasetSpec(path=str(a), max_samples=5), DatasetSpec(path=str(b))]
    for mix in ("concat", "interleave"):
        scan = scan_stream(stream_sources(specs), mix=mix)
        assert scan.fingerprint == load_datasets(specs, mix=mix).fingerprint, mix
        assert scan.documents == 9
    assert scan.sources[0].max_rows == 5  # a pass reads the first 5 rows of a.txt only


def test_a_row_of_a_kind_pt_cannot_train_on_is_refused_even_when_skipping(tmp_path):
    from tuneforge.stages.pt import PretrainStage

    pairs = tmp_path / "p.jsonl"
    pairs.write_text(json.dumps({"instruction": "q", "chosen": "a", "rejected": "b"}) + "\n", encoding="utf-8")
    check = PretrainStage().check_records
    with pytest.raises(DataError, match="stage pt trains on"):
        scan_stream(stream_sources([DatasetSpec(path=str(pairs))]), on_error="skip", check=lambda r: check([r]))


# ---- tokens and blocks -----------------------------------------------------------------------------------------

def _doc_ids(tok, texts: list[str]) -> list[list[int]]:
    return [tok(t, add_special_tokens=True)["input_ids"] + [tok.eos_token_id] for t in texts]


def test_the_stream_holds_the_in_memory_pt_tokens_in_full_blocks(tmp_path, tok):
    """The real contract against in-memory pt (render_text chunks, then packed by best fit): the same tokens in the
    same order, every block exactly cutoff long, position ids restarting at every document and block, and every
    token trained except the first of each piece."""
    from tuneforge.config.schema import DataSection
    from tuneforge.stages.pt import PretrainStage
    from tuneforge.train.data_prep import _packed

    cutoff = 32
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(_docs(40)) + "\n", encoding="utf-8")
    stream, _ = _stream(path, tok, cutoff)
    blocks = list(stream.blocks(passes=1))
    docs = _doc_ids(tok, _docs(40))
    flat = [t for d in docs for t in d]
    assert all(len(b["input_ids"]) == cutoff for b in blocks[:-1]) and 0 < len(blocks[-1]["input_ids"]) <= cutoff
    assert [t for b in blocks for t in b["input_ids"]] == flat

    records = load_dataset(DatasetSpec(path=str(path))).records
    prepared = PretrainStage().prepare(records, tok, DataSection(cutoff_len=cutoff), None)
    assert all(len(d) % cutoff != 1 for d in docs)  # no one-token tail, which render_text would drop
    assert [t for it in prepared.items for t in it["input_ids"]] == flat  # in-memory pt: same tokens, same order
    packed, _ = _packed(prepared.items, cutoff)  # ... which packing reorders into at most cutoff-long sequences
    assert sorted(t for p in packed for t in p["input_ids"]) == sorted(flat)

    starts, at = set(), 0  # where a piece begins in the flat stream: a document start or a block start
    for d in docs:
        starts.add(at)
        at += len(d)
    starts |= set(range(0, len(flat), cutoff))
    positions = [p for b in blocks for p in b["position_ids"]]
    labels = [lab for b in blocks for lab in b["labels"]]
    expected_pos, run = [], 0
    for i in range(len(flat)):
        run = 0 if i in starts else run + 1
        expected_pos.append(run)
    assert positions == expected_pos
    assert labels == [IGNORE if i in starts else t for i, t in enumerate(flat)]
    assert stream.counts["documents"] == 40 and stream.counts["passes"] == 1


def test_documents_in_one_block_do_not_attend_to_each_other(tmp_path, tok, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from tuneforge.data.collate import PadCollator

    path = tmp_path / "two.txt"
    path.write_text("the cat sat on the mat\nLily ran after a red ball in the garden\n", encoding="utf-8")
    stream, _ = _stream(path, tok, 64)
    (block,) = list(stream.blocks(passes=1))
    first, second = _doc_ids(tok, ["the cat sat on the mat", "Lily ran after a red ball in the garden"])
    batch = PadCollator(tok.pad_token_id, packed=True)([block])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    with torch.no_grad():
        together = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                         use_cache=False).logits[0, len(first):]  # a KV cache turns the packed masking off
        alone = model(input_ids=torch.tensor([second])).logits[0]
    # float rounding differs with the positions' layout (~1e-5); a leak across the documents moves logits by ~1e-1
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=0)


def test_the_stream_is_endless_and_every_block_is_full(tmp_path, tok):
    path = tmp_path / "small.txt"
    path.write_text("\n".join(_docs(5)) + "\n", encoding="utf-8")
    stream, _ = _stream(path, tok, 16)
    tokens = sum(len(d) for d in _doc_ids(tok, _docs(5)))
    n = 3 * tokens // 16 + 1  # more than three passes' worth
    blocks = [b for _, b in zip(range(n), stream.blocks())]
    assert len(blocks) == n and all(len(b["input_ids"]) == 16 for b in blocks)
    assert stream.counts["passes"] >= 3


def test_shards_split_the_rows_between_processes_and_workers(tmp_path, tok):
    path = tmp_path / "rows.txt"
    docs = _docs(23)
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    seen = []
    for shard in range(3):
        stream, _ = _stream(path, tok, 4096)
        (block,) = list(stream.blocks(shard=shard, n_shards=3, passes=1))
        seen.append(block["input_ids"])
        assert block["input_ids"] == [t for d in _doc_ids(tok, docs[shard::3]) for t in d]
    assert sum(map(len, seen)) == sum(len(d) for d in _doc_ids(tok, docs))


def test_the_shuffle_buffer_reorders_blocks_deterministically(tmp_path, tok):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(_docs(60)) + "\n", encoding="utf-8")
    plain = list(_stream(path, tok, 16)[0].blocks(passes=1))
    shuffled = list(_stream(path, tok, 16, shuffle_buffer=8, seed=3)[0].blocks(passes=1))
    again = list(_stream(path, tok, 16, shuffle_buffer=8, seed=3)[0].blocks(passes=1))
    assert shuffled == again and shuffled != plain
    assert sorted(map(str, shuffled)) == sorted(map(str, plain))


def test_a_row_broken_after_the_scan_is_skipped_and_counted_not_raised(tmp_path, tok):
    path = tmp_path / "grows.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in _docs(6)), encoding="utf-8")
    stream, _ = _stream(path, tok, 32)
    with open(path, "a", encoding="utf-8") as f:  # edited while the run trains
        f.write('{"text": "cut off\n' + json.dumps({"text": "fine again"}) + "\n")
    blocks = list(stream.blocks(passes=1))
    assert stream.counts["late_skipped"] == 1 and "grows.jsonl:7" in stream.counts["late_examples"][0]
    assert stream.counts["documents"] == 7
    assert blocks[-1]["input_ids"][-len(_doc_ids(tok, ["fine again"])[0]):] == _doc_ids(tok, ["fine again"])[0]


# ---- memory ----------------------------------------------------------------------------------------------------

def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status (VmRSS) on this system")


BOUND_MB = 16  # measured: about 7 MB, the same for a 16 MB and a 48 MB file


def test_memory_stays_flat_on_a_file_far_larger_than_the_bound(tmp_path, tok):
    """~32 MB of text (an in-memory read would hold it all, and its rows, several times over): scanned and streamed
    to the end with the resident memory never more than BOUND_MB above where it started."""
    path = tmp_path / "big.txt"
    lines = [f"{d} number {i}" for i, d in enumerate(_docs(997))]
    chunk = ("\n".join(lines) + "\n").encode()
    with open(path, "wb") as f:
        while f.tell() < 32 << 20:
            f.write(chunk)
    size_mb = path.stat().st_size / (1 << 20)
    assert size_mb > 2 * BOUND_MB
    base, peak = _rss_mb(), 0.0

    def watch(_=0):
        nonlocal peak
        peak = max(peak, _rss_mb() - base)

    scan = scan_stream(stream_sources([DatasetSpec(path=str(path))]), progress=lambda n: None)
    watch()
    stream = TokenStream(scan.sources, tok, 512)
    for i, _ in enumerate(stream.blocks(passes=1)):
        if i % 500 == 0:
            watch()
    watch()
    assert stream.counts["documents"] == scan.documents > 100_000
    assert peak < BOUND_MB, f"resident memory grew {peak:.0f} MB while streaming {size_mb:.0f} MB"


# ---- configuration -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, problem, fix", [
    (["stage=sft", "train.max_steps=5"], "stage sft is not streamed", "set stage: pt"),
    (["stage=pt"], "needs train.max_steps", "set train.max_steps=N"),
    (["stage=pt", "train.max_steps=5", "data.val_size=0.1"], "cannot hold rows out of a stream", "data.eval="),
    (["stage=pt", "train.max_steps=5", "data.max_samples=10"], "seeded subset", "max_samples on a dataset entry"),
    (["stage=pt", "train.max_steps=5", "data.train=[{path: a.txt, ratio: 0.5}]"], "ratio resamples", "remove ratio"),
])
def test_settings_a_stream_cannot_honour_are_config_errors(overrides, problem, fix):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.train=a.txt", "data.streaming=true", *overrides])
    assert problem in str(err.value) and fix in str(err.value)


def test_a_shuffle_buffer_without_streaming_is_a_config_error():
    with pytest.raises(ConfigError, match="shuffle_buffer applies to data.streaming only"):
        load_config(None, ["data.train=a.txt", "data.shuffle_buffer=100"])


def test_the_runner_refuses_the_same_for_configs_built_in_code(monkeypatch):
    from tuneforge.train.runner import _check_config

    cfg = load_config(None, ["data.train=a.txt", "stage=pt", "data.streaming=true", "train.max_steps=5"])
    cfg.train.max_steps = -1  # assignment checks the field, not the sections together
    with pytest.raises(ConfigError, match="needs train.max_steps") as err:
        _check_config(cfg, "cpu")
    assert "train.max_steps=N" in err.value.hint
