"""Dataset doctor entry point: find what is wrong with a dataset before training on it (`tuneforge data check`).

`check_dataset(target, CheckOptions(...))` loads a file / folder / registered dataset through the normal loader
(bad rows skipped and kept as findings), runs every check and returns a `CheckResult`; `report.write_report` turns
it into Markdown + HTML + JSON with charts and `fix.write_fixed` writes a cleaned copy. Checks: schema errors, empty
fields, BOMs, exact / near duplicates, conflicting answers, suspicious characters, lengths and truncation, label
balance, diversity, script mix, and train/test leakage with `against`.
"""

from __future__ import annotations

import os
from pathlib import Path

from tuneforge.data.catalog import DatasetSpec, dataset_spec, load_dataset, read_dataset_info
from tuneforge.data.doctor import distribution
from tuneforge.data.doctor.content import check_boms_and_suspicious, check_empty_fields, check_schema
from tuneforge.data.doctor.duplicates import check_duplicates, check_leakage
from tuneforge.data.doctor.lengths import lengths
from tuneforge.data.doctor.result import SEVERITY_ORDER, CheckOptions, CheckResult, Loaded
from tuneforge.data.sources import is_hub_id, list_files, read_file
from tuneforge.utils.errors import DataError

_BOM = b"\xef\xbb\xbf"


def _files_of(target: str, opts: CheckOptions) -> tuple[DatasetSpec, list[Path]]:
    p = Path(target).expanduser()
    if p.exists():
        return dataset_spec(path=str(p), format=opts.format), list_files(p)
    if is_hub_id(target) and "/" in target:
        return dataset_spec(path=target, format=opts.format), []
    spec = dataset_spec(name=target, format=opts.format)
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
    result = load_dataset(spec, dataset_info=opts.dataset_info, on_error="skip", prompts=opts.prompts)
    raw = [row for f in files for row in read_file(f)] if files else None
    boms = [str(f) for f in files if _starts_with_bom(f)]
    return Loaded(target, result, files, raw, boms)


def _empty_result(target: str, ld: Loaded) -> CheckResult:
    recs = ld.records
    n_rows = len(ld.raw) if ld.raw is not None else len(recs) + len(ld.result.skipped)
    return CheckResult(
        dataset={"target": target, "name": ld.result.name, "fingerprint": ld.result.fingerprint,
                 "format": ld.result.format, "files": [str(f) for f in ld.files], "rows": n_rows,
                 "usable_rows": len(recs)},
        findings=[], stats={}, lengths={}, loaded=ld)


def check_dataset(target: str, opts: CheckOptions | None = None) -> CheckResult:
    """Run every check on `target` (a file, folder or registered name); `opts.against` adds leakage checks."""
    opts = opts or CheckOptions()
    ld = load_target(target, opts)
    recs, k = ld.records, opts.examples
    res = _empty_result(target, ld)
    res.findings += check_schema(ld, k) + check_empty_fields(ld, k) + check_boms_and_suspicious(ld, k)
    res.findings += check_duplicates(res, opts.near_threshold, k)
    found, res.stats["lengths"], res.lengths = lengths(recs, opts.model, opts.template, opts.cutoff, k)
    res.findings += found
    for name, fn in (("labels", distribution.labels), ("languages", distribution.languages)):
        found, res.stats[name] = fn(recs)
        res.findings += found
    found, res.stats["diversity"] = distribution.diversity(recs, k)
    res.findings += found
    if opts.against:
        res.findings += check_leakage(res, load_target(opts.against, opts), opts.near_threshold, k)
    res.findings.sort(key=lambda f: (SEVERITY_ORDER[f.severity], -f.count))
    return res
