"""`tuneforge ui`: the server of `tuneforge serve` with the web UI (tuneforge.ui) at /, opened in the browser.

The UI is a client of that server's HTTP API, so everything it starts is a fine-tuning job like any other, and a
page reloaded (or a UI restarted on the same storage and registry) shows the same files and jobs.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

import typer

from tuneforge.cli.use_cmd import TEMPLATE_HELP, _base_model
from tuneforge.utils.console import console

UI_HELP = """Open the web UI: upload data and see it rendered and checked, pick a method, train, watch the loss, and
chat with the result next to the base model.

It runs the same server as `tuneforge serve` (the OpenAI API at /v1, fine-tuning jobs in worker processes) and
serves the page at / (http://127.0.0.1:8000/). Chat answers are logged so that thumbs up/down reach /v1/feedback
(--no-log-requests turns this off). See docs/ui.md.
"""

def _open_when_up(server, url: str) -> None:
    """Open the browser once uvicorn listens (not before: the page would fail to load)."""
    import webbrowser

    deadline = time.monotonic() + 600  # a large base takes a while to load
    while not server.started and time.monotonic() < deadline and not server.should_exit:
        time.sleep(0.1)
    if server.started and not webbrowser.open(url):
        console.print(f"open {url} in a browser", markup=False, highlight=False)


def ui_cmd(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="base model: alias (smollm2-135m-instruct), "
                                                                  "HF folder, .gguf file or hub id"),
    template: str = typer.Option("auto", "--template", "-t", help=TEMPLATE_HELP),
    name: Optional[str] = typer.Option(None, "--name", help="model id of the base (default: --model as given)"),
    runs: Optional[str] = typer.Option("runs", "--runs", help="folder of tuneforge runs to serve; '' for none"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (loopback unless --insecure)"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    device: str = typer.Option("auto", "--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, …"),
    storage: Optional[str] = typer.Option(None, "--storage", help="folder for uploaded files and fine-tuning jobs "
                                                                  "(default $TUNEFORGE_HOME/serve)"),
    concurrency: int = typer.Option(1, "--concurrency", help="fine-tuning jobs trained at once"),
    dataset_info: Optional[str] = typer.Option(None, "--dataset-info", help="a dataset_info.json (or its folder) "
                                               "whose datasets the page offers to import (default "
                                               "$TUNEFORGE_DATASET_INFO)"),
    log_requests: bool = typer.Option(True, "--log-requests/--no-log-requests",
                                      help="store chat answers in the registry, so thumbs up/down can rate them"),
    insecure: bool = typer.Option(False, "--insecure", help="serve beyond loopback without checking API keys"),
    browser: bool = typer.Option(True, "--browser/--no-browser", help="open the UI in the default browser"),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level: debug, info, warning, error"),
) -> None:
    import uvicorn

    from tuneforge.serve.app import create_app
    from tuneforge.serve.run import check_bind, keys_required, summary
    from tuneforge.serve.settings import ServeSettings
    from tuneforge.ui.app import mount_ui

    check_bind(host, insecure)  # before anything loads
    settings = ServeSettings(model=_base_model(model, None), name=name, template=template, runs_dir=runs or None,
                             device=device, storage=storage, concurrency=concurrency, log_requests=log_requests,
                             require_keys=keys_required(host, insecure), dataset_info=dataset_info,
                             other_bases=True, max_copies=2)  # another base and its fine-tune, side by side
    app = create_app(settings)
    mount_ui(app)
    console.print(summary(app), markup=False, highlight=False, soft_wrap=True)
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    console.print(f"web UI: {url}  (OpenAI base_url: {url}v1)", markup=False, highlight=False, soft_wrap=True)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    if browser:
        threading.Thread(target=_open_when_up, args=(server, url), daemon=True).start()
    server.run()


def register(app: typer.Typer) -> None:
    """Add the top-level command ui to `app`."""
    app.command("ui", help=UI_HELP)(ui_cmd)
