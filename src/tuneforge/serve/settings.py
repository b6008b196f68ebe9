"""What one `tuneforge serve` process serves and how: the base model, the adapters and runs beside it, limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.utils.errors import ConfigError
from tuneforge.utils.paths import tuneforge_home

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeSettings:
    """Settings of one server.

    model: the base model (alias, folder, .gguf file or hub id), loaded once at start and never reloaded.
    name: the model id clients use for the base (default: `model` as given).
    template: the base's chat template (`auto` = its own; a named one replaces it). An adapter or run keeps the
        template saved with it (the one its training used) and falls back to this one when it carries none.
    adapters: model id → adapter folder, served on top of the base.
    runs_dir: a folder of tuneforge runs; every finished run trained on this base is served under its folder's
        path relative to runs_dir (rescanned when a model id is not found, so a run that just finished is callable).
    max_adapters: LoRA adapters kept loaded on the shared base (least recently used one unloaded first).
    max_copies: models that need their own copy of the weights (full fine-tunes, non-LoRA adapters) kept loaded.
    max_tokens: the largest completion a request may ask for, and the default when it asks for none (both also
        capped by the model's context length).
    max_n: the most choices (`n`) one request may ask for.
    storage: the folder for uploaded files and fine-tuning jobs' runs (default $TUNEFORGE_HOME/serve); with the Ray
        executor, a folder every node reads and writes at the same path.
    jobs: serve the files and fine-tuning jobs API (and run jobs in workers).
    concurrency: jobs trained at once (each in its own worker process).
    executor: where job workers run: `local` (processes on this machine) or `ray` (tasks on a Ray cluster).
    ray_address: the Ray cluster for executor `ray` (`auto`, or host:port of the head).
    max_attempts: times a job is started before a worker that keeps dying fails it.
    require_keys: every request needs a valid API key (always on when binding beyond loopback).
    log_requests: store every chat completion (request, answers, model id) in the registry, for /v1/feedback.
    max_upload_mb: the largest file POST /v1/files accepts. max_request_mb: the largest other request body.
    registry_url: the registry holding files, jobs, keys and logged completions (default: the usual one).
    python_grader: allow reinforcement jobs' `python` graders, which run the client's code on this machine.
    dataset_info: a `dataset_info.json` (or its folder) whose datasets the web UI offers to import as files
        (default $TUNEFORGE_DATASET_INFO).
    other_bases: jobs may fine-tune another base than the served one (a model alias, local folder, GGUF file or hub
        id, as `tuneforge train` takes it); such bases and their fine-tuned models are served as their own copies.
    """

    model: str
    name: str | None = None
    template: str = "auto"
    adapters: dict[str, str] = field(default_factory=dict)
    runs_dir: str | None = "runs"
    max_adapters: int = 8
    max_copies: int = 1
    max_tokens: int = 2048
    max_n: int = 8
    device: str = "auto"
    dtype: str = "auto"
    storage: str | None = None
    jobs: bool = True
    concurrency: int = 1
    executor: str = "local"
    ray_address: str | None = None
    max_attempts: int = 3
    require_keys: bool = False
    log_requests: bool = False
    max_upload_mb: int = 512
    max_request_mb: int = 16
    registry_url: str | None = None
    python_grader: bool = False
    dataset_info: str | None = None
    other_bases: bool = False

    def __post_init__(self):
        for key in ("max_adapters", "max_copies", "max_tokens", "max_n", "concurrency", "max_attempts",
                    "max_upload_mb", "max_request_mb"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"executor must be local or ray, got {self.executor!r}")

    @property
    def base_id(self) -> str:
        return self.name or self.model

    @property
    def storage_dir(self) -> Path:
        return Path(self.storage).expanduser().resolve() if self.storage else tuneforge_home() / "serve"
