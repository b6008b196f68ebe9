"""`tuneforge serve`: an OpenAI-compatible server for a base model and its fine-tuned adapters and runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tuneforge.cli.use_cmd import MODEL_HELP, TEMPLATE_HELP, _adapter_dir, _base_model, _recorded_bases
from tuneforge.utils.console import console
from tuneforge.utils.errors import ConfigError

SERVE_HELP = """Serve a base model and its fine-tuned models over an OpenAI-compatible HTTP API.

\b
Endpoints (base URL http://127.0.0.1:8000/v1):
  GET  /v1/models              the base and every fine-tuned model, with parent (its base) and root (its folder)
  POST /v1/chat/completions    chat, streamed (SSE) or not
  POST /v1/completions         raw text continuation, streamed or not
  POST /v1/files               upload training data (validated at once; a bad file is refused naming its lines)
  POST /v1/fine_tuning/jobs    fine-tune this base (supervised, dpo, reinforcement with graders); then list,
                               retrieve, cancel, pause, resume, events, checkpoints
  POST /v1/feedback            rate / correct a logged answer (--log-requests); `tuneforge data from-feedback`
\b
Model ids (a request's `model`):
  the base          --model as given, or --name ID
  an adapter        NAME from --adapter NAME=PATH (PATH: an adapter folder, or a run folder holding adapter/;
                    --adapter PATH alone names it after the run folder)
  a finished run    its folder's path under --runs (default ./runs): `sft-lora`, or `sweep1/n500-lr1e-4` for a
                    sweep's child. Only runs trained on this base; a run that finishes while the server runs can
                    be called at once. Runs left out are listed at start, with why.
  a job's model     ft:BASE:SUFFIX:JOB once the job succeeded, and ft:BASE:SUFFIX:JOB:ckpt-step-N for each of
                    its checkpoints (only for the API key's project)
\b
With the official openai client:
  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
  r = client.chat.completions.create(model="sft-lora", temperature=0, max_tokens=128,
                                     messages=[{"role": "user", "content": "Hello"}])
  print(r.choices[0].message.content)
With curl:
  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "sft-lora", "messages": [{"role": "user", "content": "Hello"}], "stream": true}'
\b
Prompts are rendered with the chat template saved with the adapter or run (the one its training used); --template
sets the base's and is the fallback for adapters saved without one. Defaults follow OpenAI: temperature 1 (pass
temperature=0 for the greedy answers of `tuneforge chat`), top_p 1; a chat answer may run to --max-tokens.
Supported: temperature, top_p, max_tokens / max_completion_tokens, stop, seed, n, stream (+ include_usage),
logprobs / top_logprobs (chat) and logprobs 0-5 (completions), the extensions repetition_penalty and
return_token_ids. Refused with a 400 for now: frequency/presence penalty, logit_bias, echo with logprobs, forced
tool calls, non-text content.
\b
Fine-tuning jobs train in worker processes (--concurrency at once; --executor ray runs them on a Ray cluster)
with the same runner as `tuneforge train`, LoRA by default; our extension `tuneforge: {"method.type": "full",
"train.max_steps": 100}` (extra_body) sets any other config key. Uploaded files and runs live under --storage;
jobs, files and keys in the registry. A worker that dies is restarted from its last checkpoint; stopping the
server leaves running workers going, and the next start adopts them.
\b
LoRA adapters are loaded onto the one base on first use and kept (--max-adapters, least recently used unloaded
first); the base is never reloaded. Full fine-tunes and other adapter kinds load their own copy (--max-copies).
Requests are answered one at a time per set of weights (the base and its LoRA adapters share one queue); batching
is not there yet.
\b
API keys: `tuneforge keys create --project NAME` (Bearer KEY). Files, jobs and fine-tuned models belong to the
key's project. On 127.0.0.1 keys are optional (no key or an unknown one is project "default") unless
--require-keys; any other --host requires them and refuses to start while the registry holds none.
"""


def _adapters(specs: list[str]) -> dict[str, str]:
    """NAME=PATH (or a PATH that exists, named after its run folder) → {name: adapter folder}."""
    found: dict[str, str] = {}
    for spec in specs:
        if Path(spec).expanduser().exists() or "=" not in spec:
            path = spec
            folder = Path(spec).expanduser().resolve()
            name = folder.parent.name if folder.name == "adapter" else folder.name
        else:
            name, path = spec.split("=", 1)
        if not name or name in found:
            raise ConfigError(f"--adapter {spec}: {'an empty name' if not name else f'name {name!r} given twice'}",
                              hint="use --adapter NAME=PATH with a distinct NAME for each adapter")
        found[name] = _adapter_dir(str(Path(path).expanduser()))
    return found


def _warn_other_base(adapters: dict[str, str], model: str) -> None:
    """An adapter that records another base would be served on the wrong weights: say so at start."""
    from tuneforge.models.source import resolve_model
    from tuneforge.utils.errors import ModelError

    def resolved(name: str) -> str | None:
        try:
            return resolve_model(name).path
        except ModelError:
            return None

    ours = resolved(model)
    for name, folder in adapters.items():
        recorded = [base for base, _ in _recorded_bases(folder)]
        if recorded and ours not in {resolved(b) for b in recorded}:
            console.print(f"[yellow]warning:[/yellow] adapter {name} records base {recorded[0]}, not {model}")


def serve_cmd(
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + "; loaded once, never reloaded"),
    adapter: Optional[list[str]] = typer.Option(None, "--adapter", "-a",
                                                help="NAME=PATH: serve an adapter (folder or run folder) as model "
                                                     "id NAME; repeat for more"),
    runs: Optional[str] = typer.Option("runs", "--runs", help="folder of tuneforge runs to serve (those trained "
                                                              "on this base); '' for none"),
    name: Optional[str] = typer.Option(None, "--name", help="model id of the base (default: --model as given)"),
    template: str = typer.Option("auto", "--template", "-t", help=TEMPLATE_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (loopback unless --insecure)"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    max_adapters: int = typer.Option(8, "--max-adapters", help="LoRA adapters kept loaded on the base (LRU)"),
    max_copies: int = typer.Option(1, "--max-copies", help="full fine-tunes / non-LoRA adapters kept loaded, each "
                                                           "a whole copy of the weights (LRU)"),
    max_tokens: int = typer.Option(2048, "--max-tokens", help="longest completion a request may ask for, and a "
                                                              "chat answer's default limit"),
    max_n: int = typer.Option(8, "--max-n", help="most choices (n) per request"),
    device: str = typer.Option("auto", "--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, …"),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bf16/fp16 on GPU, fp32 on CPU), float32, bfloat16, "
                                                      "float16"),
    insecure: bool = typer.Option(False, "--insecure", help="serve beyond loopback without checking API keys "
                                                            "(anyone who can reach the port)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="folder for uploaded files and fine-tuning jobs "
                                                                  "(default $TUNEFORGE_HOME/serve)"),
    jobs: bool = typer.Option(True, "--jobs/--no-jobs", help="serve the files and fine-tuning jobs API"),
    concurrency: int = typer.Option(1, "--concurrency", help="fine-tuning jobs trained at once, each in its own "
                                                             "worker process"),
    executor: str = typer.Option("local", "--executor", help="where job workers run: local, or ray (a Ray "
                                                             "cluster; see --ray-address)"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster for --executor ray: auto, "
                                                                          "or HOST:PORT of its head"),
    require_keys: bool = typer.Option(False, "--require-keys", help="refuse requests without a valid API key, "
                                                                    "also on loopback (`tuneforge keys create`)"),
    log_requests: bool = typer.Option(False, "--log-requests", help="store every chat completion in the registry "
                                                                    "(for /v1/feedback and `data from-feedback`)"),
    max_upload_mb: int = typer.Option(512, "--max-upload-mb", help="largest file POST /v1/files accepts"),
    python_grader: bool = typer.Option(False, "--allow-python-grader", help="let reinforcement jobs use `python` "
                                                                            "graders (runs clients' code here)"),
    other_bases: bool = typer.Option(False, "--other-bases", help="let jobs fine-tune another model than --model "
                                                                  "(alias, folder, .gguf, hub id); each is served as "
                                                                  "its own copy"),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level: debug, info, warning, error"),
) -> None:
    from tuneforge.serve.run import check_bind, serve
    from tuneforge.serve.settings import ServeSettings

    check_bind(host, insecure)  # before anything loads
    adapters = _adapters(adapter or [])
    model = _base_model(model, next(iter(adapters.values()), None))
    _warn_other_base(adapters, model)
    settings = ServeSettings(model=model, name=name, template=template, adapters=adapters, runs_dir=runs or None,
                             max_adapters=max_adapters, max_copies=max_copies, max_tokens=max_tokens, max_n=max_n,
                             device=device, dtype=dtype, storage=storage, jobs=jobs, concurrency=concurrency,
                             executor=executor, ray_address=ray_address, require_keys=require_keys,
                             log_requests=log_requests, max_upload_mb=max_upload_mb, python_grader=python_grader,
                             other_bases=other_bases)
    serve(settings, host=host, port=port, insecure=insecure, log_level=log_level)


def register(app: typer.Typer) -> None:
    """Add the top-level command serve to `app`."""
    app.command("serve", help=SERVE_HELP)(serve_cmd)
