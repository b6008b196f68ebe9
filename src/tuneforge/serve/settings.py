"""What one `tuneforge serve` process serves and how: the base model, the adapters and runs beside it, limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from tuneforge.utils.errors import ConfigError

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

    def __post_init__(self):
        for key in ("max_adapters", "max_copies", "max_tokens", "max_n"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")

    @property
    def base_id(self) -> str:
        return self.name or self.model
