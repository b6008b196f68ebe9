"""Dataset doctor: find what is wrong with a dataset before training on it (`tuneforge data check`).

`check_dataset(target, CheckOptions(...))` loads a file / folder / registered dataset through the normal loader
(bad rows skipped and kept as findings), runs every check and returns a `CheckResult`; `inspect_report.write_report`
turns it into Markdown + HTML + JSON with charts and `inspect_fix.write_fixed` writes a cleaned copy. Checks: schema
errors, empty fields, BOMs, exact / near duplicates, conflicting answers, suspicious characters, lengths and
truncation, label balance, diversity, script mix, and train/test leakage with `against`.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneforge.data import inspect_dups as dups
from tuneforge.data import inspect_text as tx
from tuneforge.data.catalog import DatasetSpec, LoadResult, load_dataset, read_dataset_info
from tuneforge.data import inspect_stats
from tuneforge.data.records import Record
from tuneforge.data.sources import RawRow, is_hub_id, list_files, read_file
from tuneforge.utils.errors import DataError

_BOM = b"\xef\xbb\xbf"


@dataclass
class CheckOptions:
    against: str | None = None  # a test set to check leakage against
    model: str | None = None  # token lengths under this model's tokenizer + chat template
    template: str = "auto"
    cutoff: int | None = None  # count rows longer than this many tokens
    near_threshold: float = 0.8  # Jaccard similarity of character n-grams
    dataset_info: str | None = None  # registry for registered names (else $TUNEFORGE_DATASET_INFO)
    format: str = "auto"
    examples: int = 5


@dataclass
class Finding:
    check: str
    severity: str  # "error" | "warning" | "info"
    count: int
    summary: str
    examples: list[dict] = field(default_factory=list)


@dataclass
class Loaded:
    """A dataset as the doctor sees it: loader output plus the raw rows of its local files."""

    target: str
    result: LoadResult
    files: list[Path]
    raw: list[RawRow] | None  # None for hub datasets
    bom_files: list[str]

    @property
    def records(self) -> list[Record]:
        return self.result.records


@dataclass
class CheckResult:
    dataset: dict
    findings: list[Finding]
    stats: dict
    lengths: dict  # {"unit", "prompt": [...], "answer": [...]} for charts
    loaded: Loaded
    drops: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> {source: reason}, used by --fix

    def summary(self) -> dict:
        """JSON-ready summary (no per-row arrays)."""
        return {"dataset": self.dataset, "findings": [asdict(f) for f in self.findings], "stats": self.stats}

    def count(self, check: str) -> int:
        return sum(f.count for f in self.findings if f.check == check)


def _files_of(target: str, opts: CheckOptions) -> tuple[DatasetSpec, list[Path]]:
    p = Path(target).expanduser()
    if p.exists():
        return DatasetSpec(path=str(p), format=opts.format), list_files(p)
    if is_hub_id(target) and "/" in target:
        return DatasetSpec(path=target, format=opts.format), []
    spec = DatasetSpec(name=target, format=opts.format)
    info_path = opts.dataset_info or os.environ.get("TUNEFORGE_DATASET_INFO")
    if not info_path:
        raise DataError(f"'{target}' is neither a file nor a folder, and no dataset registry is set",
                        hint="pass a path, or --dataset-info / $TUNEFORGE_DATASET_INFO for a registered name")
    info_file = Path(info_path).expanduser()
    info_file = info_file / "dataset_info.json" if info_file.is_dir() else info_file
    entry = read_dataset_info(info_file).get(target) or {}
    loc = info_file.parent / entry["file_name"] if "file_name" in entry else None
    return spec, (list_files(loc) if loc is not None and loc.exists() else [])


def _starts_with_bom(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(3) == _BOM


def load_target(target: str, opts: CheckOptions) -> Loaded:
    spec, files = _files_of(target, opts)
    result = load_dataset(spec, dataset_info=opts.dataset_info, on_error="skip")
    raw = [row for f in files for row in read_file(f)] if files else None
    boms = [str(f) for f in files if _starts_with_bom(f)]
    return Loaded(target, result, files, raw, boms)


def _ex(r: Record, text: str, **more) -> dict:
    return {"source": r.source, "text": tx.snippet(text), **more}


def check_schema(ld: Loaded, k: int) -> list[Finding]:
    errs = ld.result.skipped
    if not errs:
        return []
    reasons = Counter((e.message.split(": ", 1)[-1] if (e.file or e.field) else e.message) for e in errs)
    top = "; ".join(f"{n}× {r}" for r, n in reasons.most_common(3))
    ex = [{"source": f"{e.file}:{e.line}" if e.line is not None else str(e.file), "field": e.field,
           "error": e.message} for e in errs[: k * 4]]
    return [Finding("schema_errors", "error", len(errs), f"{len(errs)} rows cannot be used: {top}", ex)]


def check_empty_fields(ld: Loaded, k: int) -> list[Finding]:
    """Whitespace-only values in the raw rows, and empty turns in the loaded conversations."""
    hits: list[dict] = []
    for row in ld.raw or []:
        for path, s in tx.all_strings(row.data or {}):
            if s and not s.strip():
                hits.append({"source": row.source, "field": path, "value": repr(s)})
    for r in ld.records:
        for i, m in enumerate(r.messages):
            if not m["content"].strip() and m["role"] in ("user", "assistant", "system"):
                hits.append({"source": r.source, "field": f"messages[{i}] ({m['role']})", "value": repr(m["content"])})
    if not hits:
        return []
    rows = len({h["source"] for h in hits})
    return [Finding("empty_fields", "warning", rows, f"{rows} rows have empty or whitespace-only fields", hits[:k * 2])]


def check_boms_and_suspicious(ld: Loaded, k: int) -> list[Finding]:
    out = []
    if ld.bom_files:
        out.append(Finding("file_bom", "warning", len(ld.bom_files), "file starts with a UTF-8 byte-order mark",
                           [{"source": f} for f in ld.bom_files]))
    by_kind: dict[str, list[dict]] = {}
    sources = ({row.source: row.data for row in ld.raw if row.data is not None} if ld.raw is not None else {})
    for r in ld.records:
        strings = list(tx.all_strings(sources[r.source])) if r.source in sources else \
            [("prompt", tx.prompt_text(r)), ("answer", tx.answer_text(r))]
        seen: set[str] = set()
        for path, s in strings:
            for kind, pos in tx.find_suspicious(s).items():
                if kind not in seen:
                    seen.add(kind)
                    by_kind.setdefault(kind, []).append({"source": r.source, "field": path,
                                                         "text": tx.context(s, pos)})
    for kind, hits in by_kind.items():
        check = "bom_in_text" if kind == "bom" else kind
        desc = tx.SUSPICIOUS[kind][0]
        out.append(Finding(check, "warning", len(hits), f"{len(hits)} rows: {desc}", hits[:k]))
    return out


def _dup_text(r: Record, boiler: set[str]) -> str:
    return tx.variable_part(tx.prompt_text(r), boiler) + "\n" + tx.answer_text(r)


def check_duplicates(res: CheckResult, threshold: float, k: int) -> list[Finding]:
    recs = res.loaded.records
    out: list[Finding] = []
    keys = [tx.content_key(r) for r in recs]
    exact = dups.exact_groups(keys)
    drop_exact = {recs[i].source: f"exact duplicate of {recs[g[0]].source}" for g in exact for i in g[1:]}
    res.drops["exact_duplicates"] = drop_exact
    if exact:
        ex = [{"sources": [recs[i].source for i in g], "text": tx.snippet(tx.prompt_text(recs[g[0]]))}
              for g in exact[:k]]
        out.append(Finding("exact_duplicates", "error", len(drop_exact),
                           f"{len(drop_exact)} rows repeat an earlier row ({len(exact)} groups)", ex))
    conflicts = []
    for g in dups.exact_groups([tx.normalize(tx.prompt_text(r)) for r in recs]):  # same prompt, other answer
        answers = {tx.normalize(tx.answer_text(recs[i])) for i in g}
        if len(answers) > 1:
            conflicts.append(g)
    if conflicts:
        ex = [{"sources": [recs[i].source for i in g], "text": tx.snippet(tx.prompt_text(recs[g[0]])),
               "answers": sorted({tx.snippet(tx.answer_text(recs[i]), 40) for i in g})} for g in conflicts[:k]]
        n = sum(len(g) for g in conflicts)
        out.append(Finding("conflicting_answers", "warning", n,
                           f"{len(conflicts)} prompts appear with different answers ({n} rows)", ex))
    boiler = tx.boilerplate_lines([tx.prompt_text(r) for r in recs])
    prompts = [tx.normalize(tx.prompt_text(r)) for r in recs]
    pairs = [p for p in dups.near_pairs([_dup_text(r, boiler) for r in recs], threshold)
             if prompts[p[0]] != prompts[p[1]]]  # same prompt, other answer: reported as a conflict above
    groups = dups.clusters(len(recs), pairs)
    res.drops["near_duplicates"] = {recs[i].source: f"near-duplicate of {recs[g[0]].source}"
                                    for g in groups for i in g[1:]}
    if pairs:
        n = len(res.drops["near_duplicates"])
        ex = [{"sources": [recs[i].source, recs[j].source], "jaccard": round(s, 3),
               "a": tx.snippet(_dup_text(recs[i], boiler)), "b": tx.snippet(_dup_text(recs[j], boiler))}
              for i, j, s in pairs[:k]]
        out.append(Finding("near_duplicates", "warning", n, f"{n} rows are near-duplicates of another row "
                           f"({len(groups)} groups, Jaccard ≥ {threshold} on character n-grams)", ex))
    return out


def check_leakage(res: CheckResult, test: Loaded, threshold: float, k: int) -> list[Finding]:
    """Rows whose prompt (fixed instruction lines left out) is also in the test set, exactly or nearly."""
    recs, trecs = res.loaded.records, test.records
    boiler = tx.boilerplate_lines([tx.prompt_text(r) for r in recs + trecs])
    left = [tx.variable_part(tx.prompt_text(r), boiler) for r in recs]
    right = [tx.variable_part(tx.prompt_text(r), boiler) for r in trecs]
    test_keys: dict[str, int] = {}
    for j, t in enumerate(right):
        test_keys.setdefault(tx.normalize(t), j)
    exact = {i: test_keys[tx.normalize(t)] for i, t in enumerate(left) if tx.normalize(t) in test_keys}
    near: dict[int, tuple[int, float]] = {}
    for i, j, s in dups.cross_pairs(left, right, threshold):
        if i not in exact and i not in near:
            near[i] = (j, s)
    res.drops["leaked"] = {recs[i].source: f"prompt also in test set at {trecs[j].source}" for i, j in exact.items()}
    res.drops["leaked"].update({recs[i].source: f"prompt near-duplicate (Jaccard {s:.2f}) of test row "
                                f"{trecs[j].source}" for i, (j, s) in near.items()})
    out = [Finding("leakage_exact", "error" if exact else "info", len(exact),
                   f"{len(exact)} training rows have a prompt that is also in {test.target}",
                   [{"source": recs[i].source, "test_source": trecs[j].source, "text": tx.snippet(left[i])}
                    for i, j in list(exact.items())[:k]]),
           Finding("leakage_near", "warning" if near else "info", len(near),
                   f"{len(near)} more training rows have a prompt nearly identical to a test prompt "
                   f"(Jaccard ≥ {threshold})",
                   [{"source": recs[i].source, "test_source": trecs[j].source, "jaccard": round(s, 3),
                     "train": tx.snippet(left[i]), "test": tx.snippet(right[j])}
                    for i, (j, s) in list(near.items())[:k]])]
    res.stats["leakage"] = {"against": test.target, "test_rows": len(trecs), "exact": len(exact), "near": len(near)}
    return out


def check_dataset(target: str, opts: CheckOptions | None = None) -> CheckResult:
    """Run every check on `target` (a file, folder or registered name); `opts.against` adds leakage checks."""
    opts = opts or CheckOptions()
    ld = load_target(target, opts)
    recs, k = ld.records, opts.examples
    n_rows = len(ld.raw) if ld.raw is not None else len(recs) + len(ld.result.skipped)
    res = CheckResult(
        dataset={"target": target, "name": ld.result.name, "fingerprint": ld.result.fingerprint,
                 "format": ld.result.format, "files": [str(f) for f in ld.files], "rows": n_rows,
                 "usable_rows": len(recs)},
        findings=[], stats={}, lengths={}, loaded=ld)
    res.findings += check_schema(ld, k) + check_empty_fields(ld, k) + check_boms_and_suspicious(ld, k)
    res.findings += check_duplicates(res, opts.near_threshold, k)
    found, res.stats["lengths"], res.lengths = inspect_stats.lengths(recs, opts.model, opts.template, opts.cutoff, k)
    res.findings += found
    for name, fn in (("labels", inspect_stats.labels), ("languages", inspect_stats.languages)):
        found, res.stats[name] = fn(recs)
        res.findings += found
    found, res.stats["diversity"] = inspect_stats.diversity(recs, k)
    res.findings += found
    if opts.against:
        res.findings += check_leakage(res, load_target(opts.against, opts), opts.near_threshold, k)
    order = {"error": 0, "warning": 1, "info": 2}
    res.findings.sort(key=lambda f: (order[f.severity], -f.count))
    return res
