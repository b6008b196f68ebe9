"""`tuneforge eval rm`: a reward model scored on chosen/rejected pairs (pairwise accuracy and mean margin)."""

from __future__ import annotations

from pathlib import Path

from tuneforge.data.catalog import dataset_spec, load_dataset
from tuneforge.stages.rm import load_reward_model, score_pairs
from tuneforge.utils.io import atomic_write_json


def evaluate_reward_model(model: str, data: str, *, limit: int | None = None, cutoff: int = 1024,
                          batch_size: int = 8, device: str = "auto", output: str | None = None,
                          progress: bool = True) -> tuple[dict, Path]:
    """Score every pair of `data` with the reward model `model` (an rm run folder or a model folder); the result is
    also written as JSON to `output` (a folder; default: beside the model) and its path returned."""
    loaded = load_dataset(dataset_spec(path=data, max_samples=limit))
    rm, tok = load_reward_model(model, device=device)
    result = {"model": model, "data": data, **score_pairs(rm, tok, loaded.records, cutoff=cutoff,
                                                          batch_size=batch_size, progress=progress)}
    folder = Path(output) if output else Path(model) / "eval_rm"
    path = folder / f"{Path(data).stem}_rm.json"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, result)
    _record(model, loaded, result, path)
    return result, path


def _record(model: str, loaded, result: dict, path: Path) -> None:
    """The evaluation as a registry run (kind eval, child of the rm run that trained `model`), like `eval task`."""
    from tuneforge.registry.api import RunRecorder

    if RunRecorder.disabled():
        return
    from tuneforge.eval.runner import ModelSpec, parent_run

    rec = RunRecorder.start(kind="eval", config={"task": "rm", "data": result["data"]}, base_model=model,
                            base_model_identity=str(Path(model).resolve()), output_dir=str(path.parent),
                            datasets=[(loaded.name, loaded.fingerprint, len(loaded.records), "eval")],
                            tags=["eval", "rm"], parent_run_id=parent_run(ModelSpec(model=model)))
    rec.add_eval(f"rm:{Path(result['data']).stem}", {k: float(result[k]) for k in ("accuracy", "margin", "n")})
    rec.add_artifact("result", str(path))
    rec.finish("succeeded")


def summary(result: dict) -> str:
    return (f"pairs {result['n']}: accuracy {result['accuracy']:.3f}, mean margin {result['margin']:+.3f} "
            f"(chosen {result['chosen_mean']:+.3f}, rejected {result['rejected_mean']:+.3f})"
            + (f"; {result['dropped']} dropped (no answer left after the cutoff)" if result["dropped"] else ""))

