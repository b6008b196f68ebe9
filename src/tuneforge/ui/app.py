"""Mount the UI's static files at / of a `tuneforge serve` application (its API routes keep precedence)."""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"


def mount_ui(app) -> None:
    """Serve STATIC at /, index.html for /. Mounted last, so /v1, /tf/v1 and /health still answer first."""
    from fastapi.staticfiles import StaticFiles

    app.mount("/", StaticFiles(directory=STATIC, html=True), name="ui")
