"""The model ids a server answers to: its base, the adapters it was given, and the finished runs under its runs
folder that were trained on that base.

A run is served under its folder's path relative to the runs folder (`sft-lora`, or `sweep1/n500-lr1e-4` for a
sweep's child), pointing at its final artifact (`adapter/` or `model/`). A run trained on another base, a reward
model (not generative) or a run that has not succeeded is not served; `skipped` says why, once per run. The runs
folder is scanned again when /v1/models is listed and when a model id is not found, so a run that has just
finished can be called without restarting the server.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from tuneforge.models.addons import is_adapter_dir, read_marker
from tuneforge.models.source import resolve_model
from tuneforge.serve.settings import ServeSettings
from tuneforge.utils.errors import ConfigError, ModelError

RUN_FILE = "run.json"
_MAX_DEPTH = 3  # runs/NAME, runs/SWEEP/CHILD, one level more for grouped sweeps


@dataclass(frozen=True)
class ModelEntry:
    """One servable model id.

    kind: "base"; "adapter" (applied on top of the base); "model" (a full fine-tune, its own weights).
    root: the folder (or, for the base, the model source) that is served. parent: the base's id, for the others.
    lora: a PEFT LoRA adapter, loaded onto the one shared base; any other adapter gets its own copy of the weights.
    base: for an adapter trained on another base than the served one (`ServeSettings.other_bases`), what that base
        loads from; such an adapter gets its own copy of the weights too.
    """

    id: str
    kind: str
    root: str
    parent: str | None
    created: int
    lora: bool = False
    base: str | None = None


def folder_context_length(folder: str) -> int | None:
    """A model folder's context length from its config.json, without loading the model."""
    try:
        value = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def is_lora_adapter(folder: str | Path) -> bool:
    """A PEFT adapter of type LORA (also DoRA, LoRA+, rsLoRA) on the plain base: these stack on one base in PEFT.
    A QLoRA adapter is not one of them: it trained on a quantized base, which it gets in its own copy."""
    from tuneforge.models.load import BASE_QUANTIZATION

    config = Path(folder) / "adapter_config.json"
    if read_marker(folder) is not None or not config.is_file() or (Path(folder) / BASE_QUANTIZATION).is_file():
        return False
    return json.loads(config.read_text(encoding="utf-8")).get("peft_type") == "LORA"


def is_generative(folder: str | Path) -> bool:
    """False for a reward model (a sequence-classification head, or an adapter trained for one)."""
    folder = Path(folder)
    for name, bad in (("adapter_config.json", lambda c: c.get("task_type") == "SEQ_CLS"),
                      ("config.json", lambda c: any(a.endswith("ForSequenceClassification")
                                                    for a in c.get("architectures") or []))):
        try:
            if bad(json.loads((folder / name).read_text(encoding="utf-8"))):
                return False
        except (OSError, ValueError, AttributeError):
            continue
    return True


def _mtime(path: str) -> int:
    try:
        return int(Path(path).stat().st_mtime)
    except OSError:
        return 0


def _adapter_entry(model_id: str, folder: str, base_id: str, created: int) -> ModelEntry:
    return ModelEntry(model_id, "adapter", str(Path(folder).resolve()), base_id, created, is_lora_adapter(folder))


class Catalog:
    """Resolves model ids to what serves them. Thread-safe; rescans the runs folder on demand."""

    def __init__(self, settings: ServeSettings, base_source: str, started: int):
        """`base_source`: the resolved path (or hub id) of the base, to recognise runs trained on it."""
        self.base = ModelEntry(settings.base_id, "base", base_source, None, _mtime(base_source) or started)
        self._base_source = base_source
        self._fixed = {self.base.id: self.base}
        for model_id, folder in settings.adapters.items():
            if model_id in self._fixed:
                raise ConfigError(f"adapter name '{model_id}' is taken (by the base or another adapter)")
            if not is_adapter_dir(folder):
                raise ConfigError(f"--adapter {model_id}={folder}: no adapter_config.json or tuneforge adapter there",
                                  hint="pass an adapter folder or a run folder holding adapter/; full fine-tuned "
                                       "runs are served from --runs")
            self._fixed[model_id] = _adapter_entry(model_id, folder, self.base.id, _mtime(folder))
        self._runs_dir = Path(settings.runs_dir).expanduser() if settings.runs_dir else None
        self._runs: dict[str, ModelEntry] = {}
        self._bases: dict[str, str | None] = {}  # a run's recorded base_model → resolved path (None: unresolvable)
        self.skipped: dict[str, str] = {}  # run folder → why it is not served
        self.finetuned = None  # the jobs' models: an object with find(id, project) and entries(project)
        self._lock = threading.Lock()
        self.rescan()

    def entries(self, project: str | None = None) -> list[ModelEntry]:
        """Every servable model: the base, then the given adapters, then runs by id, then the fine-tuned models
        (and their checkpoints) of `project`'s jobs."""
        self.rescan()
        tuned = self.finetuned.entries(project) if self.finetuned and project else []
        return [*self._fixed.values(), *(self._runs[k] for k in sorted(self._runs)), *tuned]

    def find(self, model_id: str, project: str | None = None) -> ModelEntry | None:
        """The entry for `model_id`; an unknown id rescans the runs folder once (a run may have just finished).
        A job's model (`ft:...`) is found for the project that owns the job only."""
        found = self._fixed.get(model_id) or self._runs.get(model_id)
        if found is None and self.finetuned and project and model_id.startswith("ft:"):
            return self.finetuned.find(model_id, project)
        if found is None and self.finetuned and project:
            found = self.finetuned.find_base(model_id, project)
            if found is not None:
                return found
        if found is None:
            self.rescan()
            found = self._runs.get(model_id)
        return found

    def rescan(self) -> None:
        if self._runs_dir is None or not self._runs_dir.is_dir():
            return
        with self._lock:
            runs, self.skipped = {}, {}
            for folder in _run_folders(self._runs_dir):
                model_id = folder.relative_to(self._runs_dir).as_posix()
                entry = self._run_entry(model_id, folder)
                if entry is not None:
                    runs[model_id] = entry
            self._runs = runs

    def _run_entry(self, model_id: str, folder: Path) -> ModelEntry | None:
        try:
            info = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return self._skip(folder, "run.json is unreadable")
        if not isinstance(info, dict) or info.get("status") != "succeeded":
            return self._skip(folder, f"status {info.get('status') if isinstance(info, dict) else '?'}")
        final = final_dir(folder, info)
        if final is None:
            return self._skip(folder, "its final model folder is missing")
        if model_id in self._fixed:
            return self._skip(folder, f"its id '{model_id}' is taken by the base or an --adapter")
        if self._resolved_base(info.get("base_model")) != self._base_source:
            return self._skip(folder, f"trained on another base ({info.get('base_model')})")
        if not is_generative(final):
            return self._skip(folder, "a reward model, not a generative one")
        created = int(info.get("ended") or _mtime(str(final)))
        if is_adapter_dir(final):
            return _adapter_entry(model_id, str(final), self.base.id, created)
        return ModelEntry(model_id, "model", str(final.resolve()), self.base.id, created)

    def _skip(self, folder: Path, why: str) -> None:
        self.skipped[str(folder)] = why
        return None

    def _resolved_base(self, name) -> str | None:
        if not isinstance(name, str) or not name:
            return None
        if name not in self._bases:
            try:
                self._bases[name] = resolve_model(name).path
            except ModelError:
                self._bases[name] = None
        return self._bases[name]


def _run_folders(root: Path, depth: int = 0):
    """Folders under `root` holding a run.json; a run's own subfolders are not searched."""
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return
    for child in children:
        if (child / RUN_FILE).is_file():
            yield child
        elif depth + 1 < _MAX_DEPTH:
            yield from _run_folders(child, depth + 1)


def final_dir(folder: Path, info: dict) -> Path | None:
    """The run's final artifact: the folder run.json names, looked up inside the run folder first (runs folders
    get moved, and run.json may hold a path relative to where training ran)."""
    recorded = info.get("final_dir")
    if not isinstance(recorded, str) or not recorded:
        return None
    for candidate in (folder / Path(recorded).name, Path(recorded).expanduser()):
        if candidate.is_dir():
            return candidate
    return None
