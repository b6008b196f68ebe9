"""`tuneforge data prepare` (render a run's data ahead of training) and `tuneforge data cache ls|rm`."""

from __future__ import annotations

import json
import time
from typing import Optional

import typer
from rich.table import Table

from tuneforge.utils.console import console

cache_app = typer.Typer(help="The data cache: rendered datasets kept for reuse (ls, rm).", no_args_is_help=True)

PREPARE_HELP = """Load, check, render and pack a run's data exactly as `tuneforge train CONFIG` would, and keep it in
the data cache, so the training run (on this machine, or another one sharing data.cache_dir) starts at once.

\b
Examples:
  tuneforge data prepare examples/sft_lora.yaml
  tuneforge data prepare big.yaml data.num_proc=8 --json
Stages pt and sft are cached; the others prepare their data at the start of each run."""


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")

    @app.command("prepare", help=PREPARE_HELP)
    def prepare_cmd(
        config: str = typer.Argument(..., help="YAML run config."),
        overrides: Optional[list[str]] = typer.Argument(None, help="dotted overrides, e.g. data.num_proc=4"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object (cache entry, hit, counts)."),
    ) -> None:
        from tuneforge.config.load import load_config
        from tuneforge.stages import stage_and_params
        from tuneforge.train.data_prep import load_run_data

        cfg = load_config(config, overrides or [])
        stage, params = stage_and_params(cfg)
        if not stage.cacheable:
            console.print(f"[yellow]stage {stage.name}[/yellow] prepares its data at the start of each run; "
                          f"checking it only")
        started = time.monotonic()
        _, _, data = load_run_data(cfg, stage, params)
        cache = data.stats.get("cache") or {}
        summary = {"cache_dir": cache.get("path"), "key": cache.get("key"), "hit": cache.get("hit", False),
                   "seconds": round(time.monotonic() - started, 2), "rows": data.n_train_rows,
                   "train_items": len(data.train), "val_items": len(data.val),
                   "bytes": _entry_bytes(cache.get("path"))}
        if as_json:
            print(json.dumps(summary))
            return
        what = "found in the cache" if summary["hit"] else "rendered into the cache"
        console.print(f"{summary['rows']:,} rows → {summary['train_items']:,} training items "
                      f"(+{summary['val_items']:,} validation), {what} in {summary['seconds']} s: "
                      f"{summary['cache_dir'] or 'not cached'} ({_size(summary['bytes'])})")

    @cache_app.command("ls")
    def ls_cmd(
        cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Cache folder (default: "
                                                "$TUNEFORGE_HOME/cache/data)."),
        as_json: bool = typer.Option(False, "--json", help="Print the entries as JSON."),
    ) -> None:
        """List the data cache's entries, most recently used first, with their size on disk."""
        from tuneforge.data.cache import DataCache, cache_root

        cache = DataCache(cache_root(cache_dir))
        entries = cache.entries()
        if as_json:
            print(json.dumps([{"key": e.key, "path": str(e.path), "bytes": e.bytes, "last_used": e.last_used,
                               **e.meta.get("describe", {}), "rows": e.meta.get("n_train_rows")} for e in entries]))
            return
        if not entries:
            console.print(f"the data cache {cache.root} is empty")
            return
        table = Table(title=f"data cache {cache.root}")
        for col in ("key", "stage", "model", "datasets", "rows", "cutoff", "size", "last used"):
            table.add_column(col)
        for e in entries:
            d = e.meta.get("describe", {})
            table.add_row(e.key[:12], d.get("stage", "?"), _short(d.get("model", "?")),
                          ", ".join(map(_short, d.get("datasets", []))), f"{e.meta.get('n_train_rows', 0):,}",
                          str(d.get("cutoff_len", "?")), _size(e.bytes),
                          time.strftime("%m-%d %H:%M", time.localtime(e.last_used)))
        console.print(table)
        console.print(f"{len(entries)} entries, {_size(sum(e.bytes for e in entries))} in all")

    @cache_app.command("rm")
    def rm_cmd(
        keys: Optional[list[str]] = typer.Argument(None, help="Entries to remove (a unique key prefix is enough)."),
        all_entries: bool = typer.Option(False, "--all", help="Remove every entry."),
        cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Cache folder (default: "
                                                "$TUNEFORGE_HOME/cache/data)."),
    ) -> None:
        """Remove data cache entries (a run that needs one renders it again)."""
        from tuneforge.data.cache import DataCache, cache_root

        cache = DataCache(cache_root(cache_dir))
        if all_entries == bool(keys):
            console.print("[red]give entry keys, or --all[/red] (`tuneforge data cache ls` lists them)")
            raise typer.Exit(2)
        freed = 0
        for key in [e.key for e in cache.entries()] if all_entries else keys:
            try:
                freed += cache.remove(key)
            except KeyError as err:
                console.print(f"[red]{err.args[0]}[/red]")
                raise typer.Exit(1) from None
        console.print(f"freed {_size(freed)}")


def _short(name: str) -> str:
    """A path's last component (a model alias or hub id stays whole)."""
    from pathlib import Path

    return Path(name).name if "/" in name and Path(name).exists() else name


def _entry_bytes(path: str | None) -> int:
    from pathlib import Path

    if not path or not Path(path).is_dir():
        return 0
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
