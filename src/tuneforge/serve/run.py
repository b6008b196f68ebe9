"""Run the server with uvicorn: loopback by default; another host only with `insecure` until API keys exist."""

from __future__ import annotations

import ipaddress

from tuneforge.serve.settings import ServeSettings
from tuneforge.utils.console import console
from tuneforge.utils.errors import ConfigError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, insecure: bool) -> None:
    """Refuse to expose the server beyond this machine while it cannot check API keys."""
    if not is_loopback(host) and not insecure:
        raise ConfigError(f"--host {host} would let anyone who can reach this machine use the server: API keys "
                          f"are not implemented yet",
                          hint="keep the default 127.0.0.1 (reach it through an SSH tunnel or an authenticating "
                               "reverse proxy), or pass --insecure if the network is yours alone")


def summary(app) -> str:
    """What the server answers to: model ids (base, adapters, runs) and the runs it leaves out, with why."""
    state = app.state.tuneforge
    lines = [f"  {e.id}  ({e.kind}{', LoRA on the base' if e.lora else ''}: {e.root})"
             for e in state.catalog.entries()]
    skipped = [f"  {folder}: {why}" for folder, why in sorted(state.catalog.skipped.items())]
    text = "model ids:\n" + "\n".join(lines)
    if skipped:
        text += "\nruns not served:\n" + "\n".join(skipped)
    return text


def serve(settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 8000, insecure: bool = False,
          log_level: str = "info") -> None:
    """Load the base, then answer until interrupted (Ctrl-C)."""
    import uvicorn

    from tuneforge.serve.app import create_app

    check_bind(host, insecure)
    app = create_app(settings)
    console.print(summary(app), markup=False, highlight=False, soft_wrap=True)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"OpenAI base_url: http://{shown}:{port}/v1", markup=False, highlight=False, soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
