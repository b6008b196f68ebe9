"""One rich console for all human-facing output (stderr, so stdout stays pipeable)."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True, highlight=False)
