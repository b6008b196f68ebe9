"""`tuneforge keys ...`: create, list and revoke the API keys `tuneforge serve` checks."""

from __future__ import annotations

import datetime as dt
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tuneforge.registry import keys
from tuneforge.registry.store import open_store
from tuneforge.utils.console import console

app = typer.Typer(help=(
    "API keys for `tuneforge serve`. Each key belongs to a project: the files, fine-tuning jobs and fine-tuned models "
    "a client creates belong to its key's project, and other projects cannot see them.\n\n"
    "A server bound beyond loopback (--host 0.0.0.0) refuses to start until the registry holds a key, and then "
    "answers 401 to a request without a valid one (Authorization: Bearer KEY, i.e. the openai client's api_key). On "
    "loopback, keys are optional (unless serve --require-keys): a request without a known key acts for the project "
    "\"default\".\n\n"
    "Only a key's SHA-256 is stored; the secret is printed once, by `create`. Registry: --registry URL, else "
    "$TUNEFORGE_REGISTRY_URL, else $TUNEFORGE_HOME/registry.db (the server must use the same one)."),
                  no_args_is_help=True)
out = Console(highlight=False, soft_wrap=False)
REGISTRY = typer.Option(None, "--registry", help="registry URL (default $TUNEFORGE_REGISTRY_URL, else "
                                                 "$TUNEFORGE_HOME/registry.db): the one the server uses")


def _when(t: dt.datetime | None) -> str:
    return t.astimezone().strftime("%Y-%m-%d %H:%M") if t else "-"


@app.command("create")
def create_cmd(project: str = typer.Option(..., "--project", "-p", help="the project the key acts for: 1-64 "
                                                                        "of A-Z a-z 0-9 _ . -"),
               name: Optional[str] = typer.Option(None, "--name", "-n", help="a label for listings, e.g. who "
                                                                             "holds the key"),
               registry: Optional[str] = REGISTRY) -> None:
    """Create a key and print its secret (to stdout, alone on its line; everything else goes to stderr)."""
    store = open_store(registry)
    row, secret = keys.create_key(store, project, name)
    console.print(f"API key {row.id} for project {row.project}" + (f" ({row.name})" if row.name else "") + ":",
                  markup=False)
    typer.echo(secret)
    console.print("[bold yellow]Copy it now: it cannot be shown again[/bold yellow] (only its hash is stored; "
                  "a lost key is revoked and replaced).")
    console.print("Use it as the openai client's api_key (or OPENAI_API_KEY), i.e. Authorization: Bearer KEY.")


@app.command("ls")
def ls_cmd(project: Optional[str] = typer.Option(None, "--project", "-p", help="only this project's keys"),
           registry: Optional[str] = REGISTRY) -> None:
    """List keys, newest first (revoked ones too). Secrets are never shown: the prefix tells keys apart."""
    store = open_store(registry)
    rows = keys.list_keys(store, project)
    if not rows:
        console.print(f"no API keys{f' for project {project}' if project else ''} in {store.display_url}; "
                      f"{keys.CREATE_HINT}", markup=False)
        return
    table = Table(title=f"API keys ({store.display_url})", title_justify="left")
    for col in ("id", "project", "name", "prefix", "created", "last used", "revoked"):
        table.add_column(col, overflow="fold", no_wrap=col in ("id", "prefix"),
                         min_width=7 if col in ("project", "name") else None)
    for r in rows:
        revoked = f"[red]{_when(r.revoked_at)}[/red]" if r.revoked_at else "-"
        table.add_row(r.id, r.project, escape(r.name or "-"), f"{r.prefix}…", _when(r.created_at),
                      _when(r.last_used_at), revoked)
    out.print(table)


@app.command("revoke")
def revoke_cmd(key: str = typer.Argument(..., help="the key's id (key_…) or prefix (tf-…) as `keys ls` shows, "
                                                   "or a unique start of either"),
               registry: Optional[str] = REGISTRY) -> None:
    """Revoke a key: the server refuses it from the next request on. Revoked keys stay listed."""
    row = keys.revoke_key(open_store(registry), key)
    console.print(f"revoked API key {row.id} ({row.prefix}…, project {row.project}) at {_when(row.revoked_at)}",
                  markup=False)
