"""Duplicate checks of the dataset doctor: exact copies, conflicting answers, near-duplicates, train/test leakage.

Each check records the rows `--fix` may drop in `CheckResult.drops` and returns its findings.
"""

from __future__ import annotations

from tuneforge.data.doctor import minhash
from tuneforge.data.doctor import text as tx
from tuneforge.data.doctor.result import CheckResult, Finding, Loaded
from tuneforge.data.records import Record


def _dup_text(r: Record, boiler: set[str]) -> str:
    return tx.variable_part(tx.prompt_text(r), boiler) + "\n" + tx.answer_text(r)


def _exact(res: CheckResult, k: int) -> list[Finding]:
    recs = res.loaded.records
    exact = minhash.exact_groups([tx.content_key(r) for r in recs])
    drop = {recs[i].source: f"exact duplicate of {recs[g[0]].source}" for g in exact for i in g[1:]}
    res.drops["exact_duplicates"] = drop
    if not exact:
        return []
    ex = [{"sources": [recs[i].source for i in g], "text": tx.snippet(tx.prompt_text(recs[g[0]]))}
          for g in exact[:k]]
    return [Finding("exact_duplicates", "error", len(drop),
                    f"{len(drop)} rows repeat an earlier row ({len(exact)} groups)", ex)]


def _conflicts(recs: list[Record], k: int) -> list[Finding]:
    """The same prompt with other answers."""
    conflicts = []
    for g in minhash.exact_groups([tx.normalize(tx.prompt_text(r)) for r in recs]):
        answers = {tx.normalize(tx.answer_text(recs[i])) for i in g}
        if len(answers) > 1:
            conflicts.append(g)
    if not conflicts:
        return []
    ex = [{"sources": [recs[i].source for i in g], "text": tx.snippet(tx.prompt_text(recs[g[0]])),
           "answers": sorted({tx.snippet(tx.answer_text(recs[i]), 40) for i in g})} for g in conflicts[:k]]
    n = sum(len(g) for g in conflicts)
    return [Finding("conflicting_answers", "warning", n,
                    f"{len(conflicts)} prompts appear with different answers ({n} rows)", ex)]


def _near(res: CheckResult, threshold: float, k: int) -> list[Finding]:
    recs = res.loaded.records
    boiler = tx.boilerplate_lines([tx.prompt_text(r) for r in recs])
    prompts = [tx.normalize(tx.prompt_text(r)) for r in recs]
    pairs = [p for p in minhash.near_pairs([_dup_text(r, boiler) for r in recs], threshold)
             if prompts[p[0]] != prompts[p[1]]]  # same prompt, other answer: reported as a conflict
    groups = minhash.clusters(len(recs), pairs)
    res.drops["near_duplicates"] = {recs[i].source: f"near-duplicate of {recs[g[0]].source}"
                                    for g in groups for i in g[1:]}
    if not pairs:
        return []
    n = len(res.drops["near_duplicates"])
    ex = [{"sources": [recs[i].source, recs[j].source], "jaccard": round(s, 3),
           "a": tx.snippet(_dup_text(recs[i], boiler)), "b": tx.snippet(_dup_text(recs[j], boiler))}
          for i, j, s in pairs[:k]]
    return [Finding("near_duplicates", "warning", n, f"{n} rows are near-duplicates of another row "
                    f"({len(groups)} groups, Jaccard ≥ {threshold} on character n-grams)", ex)]


def check_duplicates(res: CheckResult, threshold: float, k: int) -> list[Finding]:
    return _exact(res, k) + _conflicts(res.loaded.records, k) + _near(res, threshold, k)


def _leak_matches(left: list[str], right: list[str], threshold: float):
    """(exact: train index -> test index, near: train index -> (test index, jaccard)) on prompts."""
    test_keys: dict[str, int] = {}
    for j, t in enumerate(right):
        test_keys.setdefault(tx.normalize(t), j)
    exact = {i: test_keys[tx.normalize(t)] for i, t in enumerate(left) if tx.normalize(t) in test_keys}
    near: dict[int, tuple[int, float]] = {}
    for i, j, s in minhash.cross_pairs(left, right, threshold):
        if i not in exact and i not in near:
            near[i] = (j, s)
    return exact, near


def check_leakage(res: CheckResult, test: Loaded, threshold: float, k: int) -> list[Finding]:
    """Rows whose prompt (fixed instruction lines left out) is also in the test set, exactly or nearly."""
    recs, trecs = res.loaded.records, test.records
    boiler = tx.boilerplate_lines([tx.prompt_text(r) for r in recs + trecs])
    left = [tx.variable_part(tx.prompt_text(r), boiler) for r in recs]
    right = [tx.variable_part(tx.prompt_text(r), boiler) for r in trecs]
    exact, near = _leak_matches(left, right, threshold)
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
