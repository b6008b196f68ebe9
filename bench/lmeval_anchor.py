#!/usr/bin/env python
"""The lm-evaluation-harness side of bench/eval_vs_lmeval.py: runs in lm-eval's own venv and never imports tuneforge.

The task is lm-eval's own installed `arc_easy` config with only the data source swapped: the settings are read
from the installed arc_easy.yaml (prompt, choices, target, metrics, output type), then `dataset_path` becomes the
local `json` builder over the given file (hub access is not needed), the few-shot splits are dropped (0-shot) and
the task gets a name of its own. The YAML is written to a temp folder and found through `include_path`, exactly as
`lm_eval --include_path DIR --tasks NAME` finds it.

Timing: `score_s` is the time spent inside the model's `loglikelihood` (tokenization + forward passes), the part
that matches tuneforge's scorer timing; `evaluate_s` is the whole `simple_evaluate` (task build, dataset read,
requests, metrics); `load_s` the model load. Per item, the log-likelihood of every choice is kept
(`--log_samples` content), so the driver can compare item by item.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

TASK = "arc_easy_tfbench"
DROPPED = ("tag", "dataset_name", "training_split", "validation_split", "fewshot_split")


def installed_arc_easy() -> tuple[Path, dict]:
    """lm-eval's own arc_easy config (the file inside the installed package) and its settings."""
    import lm_eval
    import yaml

    path = Path(lm_eval.__file__).parent / "tasks" / "arc" / "arc_easy.yaml"
    return path, yaml.safe_load(path.read_text(encoding="utf-8"))


def local_task_config(data: Path) -> tuple[dict, dict]:
    """(the config to write, what was changed against the installed arc_easy.yaml)."""
    source, config = installed_arc_easy()
    changed = {k: config.pop(k) for k in DROPPED if k in config}
    changed["dataset_path"] = config["dataset_path"]
    changed["task"] = config["task"]
    config.update(task=TASK, dataset_path="json", dataset_kwargs={"data_files": {"test": str(data)}},
                  test_split="test")
    return config, {"source": str(source), "replaced": changed}


def write_task(folder: Path, config: dict) -> None:
    import yaml

    (folder / f"{TASK}.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def timed_loglikelihood(lm, clock: dict) -> None:
    """Wrap the model's loglikelihood so the time spent in it is summed into clock["score_s"]."""
    inner = lm.loglikelihood

    def loglikelihood(requests, *args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(requests, *args, **kwargs)
        finally:
            clock["score_s"] += time.perf_counter() - start

    lm.loglikelihood = loglikelihood


def per_item(samples: list[dict]) -> list[dict]:
    """One row per item: id, gold, each choice's log-likelihood, and lm-eval's own acc / acc_norm."""
    rows = []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        lls = [float(r[0]) for r in s["filtered_resps"]]
        rows.append({"doc_id": s["doc_id"], "id": s["doc"]["id"], "gold": int(s["target"]), "loglik": lls,
                     "acc": float(s["acc"]), "acc_norm": float(s["acc_norm"]),
                     "context": s["arguments"][0][0], "continuations": [a[1] for a in s["arguments"]]})
    return rows


def run(args) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tmp = Path(tempfile.mkdtemp(prefix="lmeval-task-"))
    config, changed = local_task_config(Path(args.data).resolve())
    write_task(tmp, config)
    manager = TaskManager(include_path=str(tmp))
    start = time.perf_counter()
    lm = HFLM(pretrained=args.model, dtype=args.dtype, device="cpu", batch_size=args.batch_size)
    load_s = time.perf_counter() - start
    clock = {"score_s": 0.0}
    timed_loglikelihood(lm, clock)
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=[TASK], num_fewshot=0, batch_size=args.batch_size,
                                  task_manager=manager, log_samples=True)
    evaluate_s = time.perf_counter() - start
    metrics = out["results"][TASK]
    items = per_item(out["samples"][TASK])
    return {"side": "lm-eval", "version": _version(),
            "task_config": config, "task_changes": changed, "metrics": _metrics(metrics), "n": len(items),
            "load_s": load_s, "evaluate_s": evaluate_s, "score_s": clock["score_s"], "items": items}


def _metrics(raw: dict) -> dict:
    """lm-eval names metrics "acc,none"; keep the plain names."""
    return {k.split(",")[0]: v for k, v in raw.items() if k.split(",")[0] in ("acc", "acc_norm", "acc_stderr",
                                                                               "acc_norm_stderr")}


def _version() -> str:
    from importlib import metadata

    return metadata.version("lm_eval")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF model folder")
    p.add_argument("--data", required=True, help="ARC items in the hub's schema (question, choices, answerKey)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--result", required=True, help="where to write the result JSON")
    args = p.parse_args()
    result = run(args)
    Path(args.result).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
