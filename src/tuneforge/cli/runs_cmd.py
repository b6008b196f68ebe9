"""`tuneforge runs ...`: list, show, compare, trace and delete recorded runs. Tables for people, --json for tools."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from tuneforge.registry import compare as cmp
from tuneforge.registry import lineage as lin
from tuneforge.registry import queries
from tuneforge.registry.liveness import owner_state
from tuneforge.registry.records import RUN_STATUSES
from tuneforge.registry.store import RegistryError, open_store
from tuneforge.utils.console import console
from tuneforge.utils.paths import tuneforge_home

app = typer.Typer(help="Recorded runs: list, show, compare, lineage, rm. Registry: $TUNEFORGE_REGISTRY_URL, "
                       "else $TUNEFORGE_HOME/registry.db.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=False)
_STATUS_STYLE = {"running": "cyan", "succeeded": "green", "failed": "red", "interrupted": "yellow",
                 "cancelled": "magenta"}
JSON = typer.Option(False, "--json", help="Print JSON to stdout instead of tables.")


def _dump(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def _fmt_dur(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _status(st: str) -> str:
    return f"[{_STATUS_STYLE.get(st, 'white')}]{st}[/]"


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _when(r: queries.RunView) -> str:
    t = r.started_at or r.created_at
    return t.astimezone().strftime("%Y-%m-%d %H:%M")


@app.command("list")
def list_cmd(status: Optional[str] = typer.Option(None, help=f"One of: {', '.join(RUN_STATUSES)}."),
             base_model: Optional[str] = typer.Option(None, "--base-model", help="Base model name or identity."),
             dataset: Optional[str] = typer.Option(None, help="Dataset fingerprint prefix (or exact name)."),
             tag: Optional[list[str]] = typer.Option(None, help="Only runs with this tag (repeatable: all must match)."),
             kind: Optional[str] = typer.Option(None, help="train, eval, export, ..."),
             group: Optional[str] = typer.Option(None, help="Sweep / group id."),
             limit: int = typer.Option(50, help="Newest N runs (0 = all)."),
             as_json: bool = JSON) -> None:
    """List runs, newest first."""
    if status and status not in RUN_STATUSES:
        raise RegistryError(f"unknown status {status!r}", hint=f"use one of {', '.join(RUN_STATUSES)}")
    store = open_store()
    runs = queries.list_runs(store, status=status, base_model=base_model, dataset=dataset, tag=tag, kind=kind,
                             group=group, limit=limit or None)
    if as_json:
        return _dump([r.to_dict() for r in runs])
    if not runs:
        console.print(f"no runs recorded in {store.display_url} match")
        return
    table = Table(title=f"runs ({store.display_url})", title_justify="left")
    for col in ("id", "kind", "status", "stage/method", "base model", "datasets", "started", "duration", "tags"):
        table.add_column(col, overflow="fold", no_wrap=col in ("id", "kind", "status", "started"))
    for r in runs:
        ds = ", ".join(f"{d['name'] or '?'}@{d['fingerprint'][:8]}" for d in r.datasets)
        table.add_row(r.id, r.kind, _status(r.status), f"{r.stage or '-'}/{r.method or '-'}", r.base_model or "-",
                      ds or "-", _when(r), _fmt_dur(r.duration_s), ",".join(r.tags))
    out.print(table)


def _show_payload(store, rid: str) -> dict:
    r = queries.get_run(store, rid)
    d = r.to_dict()
    d.update(final_metrics=queries.final_metrics(store, r.id), evals=queries.evals(store, r.id),
             artifacts=queries.artifacts(store, r.id), children=queries.children(store, r.id))
    if r.status == "running":
        d["owner"] = owner_state(r.pid, r.hostname, None)
    return d


@app.command("show")
def show_cmd(run_id: str = typer.Argument(..., help="Run id, unique prefix, or run folder."), as_json: bool = JSON) -> None:
    """Everything recorded about one run."""
    store = open_store()
    d = _show_payload(store, run_id)
    if as_json:
        return _dump(d)
    head = Table.grid(padding=(0, 2))
    for k in ("id", "kind", "status", "stage", "method", "base_model", "base_model_identity", "output_dir",
              "parent_run_id", "group_id", "started_at", "ended_at", "duration_s", "hostname", "pid", "error"):
        v = d.get(k)
        if v not in (None, "", []):
            head.add_row(f"[bold]{k}[/]", _status(v) if k == "status" else _num(v))
    head.add_row("[bold]tags[/]", ", ".join(d["tags"]) or "-")
    if d["children"]:
        head.add_row("[bold]children[/]", ", ".join(d["children"]))
    out.print(head)
    _print_rows("datasets", ["role", "name", "fingerprint", "records"],
                [[x["role"], x["name"] or "-", x["fingerprint"], _num(x["n_records"])] for x in d["datasets"]])
    _print_rows("final metrics", ["metric", "value"], [[k, _num(v)] for k, v in sorted(d["final_metrics"].items())])
    _print_rows("evals", ["name", "metrics"],
                [[e["name"], json.dumps(e["metrics"], ensure_ascii=False)[:200]] for e in d["evals"]])
    _print_rows("artifacts", ["kind", "path", "size"],
                [[a["kind"], a["path"], _size(a["size_bytes"])] for a in d["artifacts"]])
    if d.get("config"):
        _print_rows("config", ["key", "value"], [[k, _num(v)] for k, v in cmp.flatten(d["config"]).items()])


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _print_rows(title: str, cols: list[str], rows: list[list[str]]) -> None:
    if not rows:
        return
    t = Table(title=title, title_justify="left")
    for c in cols:
        t.add_column(c, overflow="fold")
    for row in rows:
        t.add_row(*[str(x) for x in row])
    out.print(t)


@app.command("compare")
def compare_cmd(run_ids: list[str] = typer.Argument(..., help="Two or more run ids (prefixes ok)."),
                metric: Optional[list[str]] = typer.Option(None, help="Curves to plot (default: loss, eval_loss)."),
                png: Optional[Path] = typer.Option(None, "--out", help="Where to write the curves PNG."),
                as_json: bool = JSON) -> None:
    """Config differences, final metrics side by side, and overlaid loss curves (PNG)."""
    if len(run_ids) < 2:
        raise RegistryError("compare needs at least two run ids")
    store = open_store()
    runs = [queries.get_run(store, i) for i in run_ids]
    ids = [r.id for r in runs]
    diff, metrics = cmp.config_diff(runs), cmp.metric_table(store, runs)
    path = cmp.plot_curves(store, runs, metric or ["loss", "eval_loss"],
                           png or cmp.default_plot_path(tuneforge_home(), ids))
    if as_json:
        return _dump({"runs": ids, "config_diff": {k: v for k, v in diff},
                      "metrics": {k: v for k, v in metrics}, "plot": str(path) if path else None})
    heads = ["key"] + [i[:8] for i in ids]
    if diff:
        _print_rows("config differences", heads, [[k] + [_num(v) for v in vals] for k, vals in diff])
    else:
        console.print("configs are identical")
    _print_rows("final metrics", heads, [[k] + [_num(v) for v in vals] for k, vals in metrics])
    if path:
        console.print(f"curves: {path}")
    else:
        console.print("no curves: none of these runs logged " + ", ".join(metric or ["loss", "eval_loss"]))


def _tree_label(n: dict) -> str:
    mark = "[bold reverse]" if n["focus"] else "[bold]"
    desc = f"{n['kind']} {n['stage'] or ''}/{n['method'] or ''}".strip()
    return f"{mark}run {n['id']}[/] {desc} {_status(n['status'])} [dim]{n['base_model'] or ''}[/]"


def _add_children(branch: Tree, n: dict, root_fps: set[str]) -> None:
    for d in n["datasets"]:
        if d["fingerprint"] not in root_fps:
            branch.add(f"[cyan]+ data[/] {d['name'] or '?'} [dim]{d['fingerprint'][:12]} ({d['role']})[/]")
    for e in n["evals"]:
        branch.add(f"[magenta]eval[/] {e['name']}: " + ", ".join(
            f"{k}={_num(v)}" for k, v in list(e["metrics"].items())[:4]))
    for a in n["artifacts"]:
        branch.add(f"[green]{a['kind']}[/] {a['path']}")
    for c in n["children"]:
        _add_children(branch.add(_tree_label(c)), c, root_fps)


@app.command("lineage")
def lineage_cmd(run_id: str = typer.Argument(..., help="Run id, unique prefix, or run folder."), as_json: bool = JSON) -> None:
    """Tree from the datasets through parent/child runs to exported models."""
    store = open_store()
    data = lin.lineage(store, run_id)
    if as_json:
        return _dump(data)
    ds = data["datasets"]
    label = ", ".join(f"{d['name'] or '?'} [dim]{d['fingerprint'][:12]} ({_num(d['n_records'])} rows)[/]"
                      for d in ds) or "(no dataset recorded)"
    tree = Tree(f"[cyan]data[/] {label}")
    root = data["tree"]
    _add_children(tree.add(_tree_label(root)), root, {d["fingerprint"] for d in ds})
    out.print(tree)


@app.command("rm")
def rm_cmd(run_id: str = typer.Argument(..., help="Run id, unique prefix, or run folder."),
           yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; delete the record and its artifacts."),
           keep_files: bool = typer.Option(False, "--keep-files", help="Delete the record only, keep artifact files.")
           ) -> None:
    """Delete a run from the registry; its artifact files too, after confirmation."""
    store = open_store()
    r = queries.get_run(store, run_id)
    if r.status == "running" and owner_state(r.pid, r.hostname, None) != "dead":
        raise RegistryError(f"run {r.id} is still running (pid {r.pid} on {r.hostname})",
                            hint="stop it first; a run whose process died is marked interrupted")
    arts = [a for a in queries.artifacts(store, r.id) if Path(a["path"]).exists()] if not keep_files else []
    kids = queries.children(store, r.id)
    console.print(f"run {r.id} ({r.kind} {r.stage or ''}/{r.method or ''}, {r.status})")
    for a in arts:
        console.print(f"  would delete {a['kind']}: {a['path']} ({_size(a['size_bytes'])})")
    if kids:
        console.print(f"  {len(kids)} child run(s) lose their parent link: {', '.join(kids)}")
    if not yes:
        if not sys.stdin.isatty():
            raise RegistryError("refusing to delete without confirmation (no terminal to ask on)",
                                hint="pass --yes to confirm")
        what = f"the record and {len(arts)} artifact path(s)" if arts else "the record"
        if not typer.confirm(f"Delete {what}?", default=False):
            console.print("nothing deleted")
            raise typer.Exit(1)
    for a in arts:
        p = Path(a["path"])
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    queries.delete_run(store, r.id)
    console.print(f"deleted run {r.id}" + (f" and {len(arts)} artifact path(s)" if arts else ""))
