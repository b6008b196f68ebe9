"""Run the server with uvicorn: loopback by default; beyond loopback only with API keys (or, loudly, `insecure`).

Binding another host turns `require_keys` on, and the server refuses to start while the registry holds no active
key (nobody could use it, and the mistake is better caught at start than as a wall of 401s). `insecure` serves
beyond loopback without checking keys, for a network that is the user's alone.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from tuneforge.registry.keys import CREATE_HINT, count_active_keys
from tuneforge.registry.store import open_store
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


def keys_required(host: str, insecure: bool, require_keys: bool = False) -> bool:
    """Whether the server checks API keys: when asked to, and always beyond loopback unless `insecure`."""
    return require_keys or not (is_loopback(host) or insecure)


def check_bind(host: str, insecure: bool, registry_url: str | None = None) -> None:
    """Refuse to expose the server beyond this machine unless it can check API keys, i.e. the registry
    (`registry_url`, default the usual one) holds at least one active key. Cheap: call it before the model loads."""
    if is_loopback(host) or insecure:
        return
    store = open_store(registry_url)
    if count_active_keys(store) == 0:
        raise ConfigError(f"--host {host} exposes the server beyond this machine, so every request needs an API "
                          f"key, but the registry at {store.display_url} holds no active API keys",
                          hint=f"{CREATE_HINT} first (the same registry: $TUNEFORGE_REGISTRY_URL); or keep the "
                               f"default 127.0.0.1; or pass --insecure to serve anyone who can reach this "
                               f"machine without a key, if the network is yours alone")


def _warn_insecure(host: str, port: int) -> None:
    console.print(f"[bold red]WARNING: --insecure: anyone who can reach {host}:{port} can use this server without "
                  f"an API key[/bold red] (models, and files and fine-tuning jobs when served). Bind 127.0.0.1, "
                  f"or drop --insecure and {CREATE_HINT}.", soft_wrap=True)


def summary(app) -> str:
    """What the server answers to: model ids (base, adapters, runs) and the runs it leaves out, with why."""
    state = app.state.tuneforge
    lines = [f"  {e.id}  ({e.kind}{', LoRA on the base' if e.lora else ''}: {e.root})"
             for e in state.catalog.entries()]
    skipped = [f"  {folder}: {why}" for folder, why in sorted(state.catalog.skipped.items())]
    text = "model ids:\n" + "\n".join(lines)
    if skipped:
        text += "\nruns not served:\n" + "\n".join(skipped)
    jobs = state.jobs
    if jobs is not None:
        s = jobs.settings
        text += (f"\nfine-tuning jobs: {s.concurrency} at a time, {s.executor} workers"
                 f"{f' on {s.ray_address}' if s.executor == 'ray' and s.ray_address else ''}; files and runs in "
                 f"{jobs.storage}; registry {jobs.store.display_url}")
    return text


def serve(settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 8000, insecure: bool = False,
          log_level: str = "info") -> None:
    """Load the base, then answer until interrupted (Ctrl-C)."""
    import uvicorn

    from tuneforge.serve.app import create_app

    check_bind(host, insecure, settings.registry_url)
    if keys_required(host, insecure, settings.require_keys) and not settings.require_keys:
        settings = dataclasses.replace(settings, require_keys=True)
    app = create_app(settings)
    console.print(summary(app), markup=False, highlight=False, soft_wrap=True)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"OpenAI base_url: http://{shown}:{port}/v1", markup=False, highlight=False, soft_wrap=True)
    if settings.require_keys:
        console.print("API keys: required (Authorization: Bearer KEY; `tuneforge keys ls` lists them)",
                      markup=False, highlight=False, soft_wrap=True)
    elif not is_loopback(host):
        _warn_insecure(host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
