"""`tuneforge chat`, `tuneforge generate`, `tuneforge export`: use a trained model."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from tuneforge.utils.console import console
from tuneforge.utils.errors import DataError, ModelError

MODEL_HELP = ("base model: alias (smollm2-135m-instruct), HF folder, .gguf file or hub id; optional with an "
              "--adapter whose run recorded its base (run.json, config.yaml or adapter_config.json)")
ADAPTER_HELP = "LoRA adapter folder of a run (OUTPUT_DIR/adapter, or OUTPUT_DIR itself)"
TOP_P_HELP = "nucleus sampling with temperature > 0: sample only from the most likely tokens covering this mass"
SEED_HELP = "random seed for sampling (temperature > 0): the same seed gives the same answers"
REPETITION_HELP = "> 1 discourages repeating tokens already in the prompt or answer (1.2 is mild); 1 = off"
TEMPLATE_HELP = ("chat template: auto = the one saved with the adapter, else the model's own; or alpaca (= default), "
                 "chatml, qwen, llama3, llama2, mistral, gemma, phi, or a .jinja file")

CHAT_HELP = """Chat with a model in the terminal, streaming the answer, with the chat template used in training.

\b
Type a message and press Enter. Commands: /reset (forget the conversation, keep --system), /exit (or Ctrl-D).
With stdin not a terminal, each input line is one user message and only the answers go to stdout, one per message:
  printf 'Hi\\nWhat can you do?\\n' | tuneforge chat --model smollm2-135m-instruct
Decoding is greedy by default (--temperature 0); try --temperature 0.7 (with --top-p 0.9) for more varied
answers, --seed N to make them reproducible, --repetition-penalty 1.2 against loops.
--model may be left out when --adapter is a tuneforge run: its recorded base model is used.
"""

GENERATE_HELP = """Generate answers for every row of a dataset, in batches, into a JSONL file.

\b
Input (--data): .jsonl / .json / .csv / .parquet file or folder, rows in any format `tuneforge train` reads:
  alpaca   {"instruction", "input"?, "system"?, "output"?}      (output becomes the reference)
  messages {"messages": [{"role", "content"}, ...]}            (a final assistant turn becomes the reference)
  sharegpt {"conversations": [{"from", "value"}, ...]}
  prompt   {"prompt": "...", "completion"|"reference"|"answer"|"output"?}
  text     {"text": "..."}   (raw continuation, no chat template: for base models)
Output (--out): one JSON object per row, in input order: index, source (file:line), messages or text, prompt (the
exact rendered prompt), reference (when the row has one), prediction, finish_reason (stop|length), prompt_tokens,
completion_tokens. An existing --out is refused unless --overwrite. Greedy unless --temperature > 0 (then
--top-p, --seed); --repetition-penalty applies to both. --model may be left out when --adapter is a tuneforge
run (its recorded base is used).
"""

EXPORT_HELP = """Merge a LoRA adapter into its base model, save a standalone Hugging Face folder (or a GGUF), verify it.

\b
The folder holds safetensors weights, the tokenizer with the chat template used in training, a generation_config
whose eos ids include the template's end-of-turn token, README.md and tuneforge_export.json. Without --adapter, a
full fine-tuned model folder is re-saved the same way. The export is reloaded and its logits compared with
base + adapter on sample conversations: max |Δlogit| must stay within 1e-3 for float32 (bf16/fp16: the merge is
checked in float32 and the reload against the cast model). On failure nothing is written to --out and the command
exits non-zero. A non-empty --out is refused unless --overwrite. --model may be left out when --adapter is a
tuneforge run (its recorded base is used); the export is recorded in `tuneforge runs` as a child of that run.

\b
--format gguf writes a GGUF for llama.cpp (Llama, SmolLM2, Mistral and Qwen2 architectures) into --out:
  merged/                the verified Hugging Face merge (above); reused by a later export into the same --out
  NAME-QUANT.gguf        --quant f16 (default), f32, bf16, q8_0, q4_0 or q4_1, NAME = the --out folder's name
  NAME-QUANT.check.json  the verification: read back through transformers, compared with merged/
  NAME-QUANT.Modelfile   with --ollama (or --format ollama): `ollama create NAME -f NAME-QUANT.Modelfile`
The GGUF embeds the tokenizer and the chat template. It is verified: the same weights quantized in memory give
the same logits (≤ 1e-3), and vs merged/ max |Δlogit| and top-1 agreement stay within the bounds of
docs/export_gguf.md (f32/f16: also the same greedy text). A failed file is renamed NAME-QUANT.gguf.failed and
the command exits non-zero. K-quants (q4_k_m, …) are refused: make them from the f16 file with llama.cpp's
llama-quantize. --ollama translates chatml and llama3 chat templates only. Existing files are never overwritten.
"""


def _adapter_dir(adapter: Optional[str]) -> Optional[str]:
    """Accept a run folder for --adapter: use its `adapter/` subfolder when the folder itself is not an adapter."""
    from tuneforge.models.addons import is_adapter_dir

    if adapter and not is_adapter_dir(adapter) and is_adapter_dir(Path(adapter) / "adapter"):
        return str(Path(adapter) / "adapter")
    return adapter


def _recorded_bases(adapter: str) -> list[tuple[str, str]]:
    """(base model, where it was read) recorded by the run or adapter at `adapter`, most specific first."""
    import yaml

    from tuneforge.registry.lineage import find_run_file

    found = []
    run = find_run_file(adapter)
    if run:
        folder, info = run
        if isinstance(info.get("base_model"), str):
            found.append((info["base_model"], str(folder / "run.json")))
        try:
            cfg = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
            found.append((cfg["model"]["name"], str(folder / "config.yaml")))
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            pass
    from tuneforge.models.addons import MARKER

    for marker in ("adapter_config.json", MARKER):
        try:
            adapter_cfg = json.loads((Path(_adapter_dir(adapter)) / marker).read_text())
            found.append((adapter_cfg["base_model_name_or_path"], str(Path(_adapter_dir(adapter)) / marker)))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return [(name, where) for name, where in found if isinstance(name, str) and name]


def _base_model(model: Optional[str], adapter: Optional[str]) -> str:
    """--model as given, else the base recorded with --adapter (the first one that resolves to a local model)."""
    from tuneforge.models.source import resolve_model

    if model:
        return model
    if not adapter:
        raise ModelError("--model is missing", hint="pass --model NAME (alias, folder, .gguf or hub id), or "
                                                    "--adapter RUN_FOLDER of a run that records its base model")
    recorded = _recorded_bases(adapter)
    resolvable = []
    for name, where in recorded:
        try:
            resolvable.append((resolve_model(name).kind != "hub", name, where))
        except ModelError:
            continue
    if not resolvable:
        seen = "; ".join(f"{name} ({where})" for name, where in recorded) or "nothing"
        raise ModelError(f"--model is missing and the base model of --adapter {adapter} is unknown: recorded "
                         f"{seen}", hint="pass --model with the model the adapter was trained on")
    _, name, where = max(resolvable, key=lambda r: r[0])  # a local model before a hub id; else file order
    console.print(f"[dim]base model {name} (from {where})[/dim]")
    return name


def _input_lines():
    """User messages: prompted lines on a terminal, else one per stdin line."""
    if sys.stdin.isatty():
        while True:
            try:
                yield console.input("[bold green]you>[/bold green] ")
            except (EOFError, KeyboardInterrupt):
                return
    else:
        for line in sys.stdin:
            yield line.rstrip("\n")


def _chat_loop(engine, system: Optional[str], **decoding) -> None:
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    interactive = sys.stdin.isatty()
    for line in _input_lines():
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            history = list(start)
            console.print("[dim](conversation reset)[/dim]")
            continue
        if text.startswith("/"):
            console.print(f"[yellow]unknown command {text}[/yellow]; use /reset or /exit")
            continue
        history.append({"role": "user", "content": text})
        if interactive:
            console.print("[bold cyan]assistant>[/bold cyan] ", end="")
        pieces = []
        for piece in engine.stream(history, **decoding):
            sys.stdout.write(piece)
            sys.stdout.flush()
            pieces.append(piece)
        sys.stdout.write("\n")
        sys.stdout.flush()
        history.append({"role": "assistant", "content": "".join(pieces)})


@dataclass
class _Item:
    source: str
    messages: list | None = None  # chat prompt (conversation so far)
    text: str | None = None  # raw text prompt
    reference: str | None = None
    tools: list | None = None  # tool schemas shown in the prompt, as in training


_REF_KEYS = ("completion", "reference", "answer", "output", "response")


def _loose_item(row: dict, file: str, line: Optional[int]) -> _Item:
    """Rows without answers, which the training loader rejects: alpaca without output, bare prompts, messages."""
    source = f"{file}:{line}" if line is not None else file
    ref = next((row[k] for k in _REF_KEYS if isinstance(row.get(k), str)), None)
    if isinstance(row.get("messages"), list):
        msgs = [{"role": m.get("role"), "content": m.get("content")} for m in row["messages"] if isinstance(m, dict)]
        if msgs and msgs[-1]["role"] == "assistant":
            ref, msgs = msgs[-1]["content"], msgs[:-1]
        return _Item(source, messages=msgs, reference=ref)
    user = row.get("instruction") if isinstance(row.get("instruction"), str) else row.get("prompt")
    if not isinstance(user, str) or not user.strip():
        raise DataError("row has no prompt: expected 'instruction', 'prompt', 'messages' or 'text'",
                        file=file, line=line, hint="see `tuneforge generate --help` for the formats")
    if isinstance(row.get("input"), str) and row["input"].strip():
        user = f"{user}\n{row['input']}"
    msgs = [{"role": "system", "content": row["system"]}] if isinstance(row.get("system"), str) and row["system"] \
        else []
    return _Item(source, messages=[*msgs, {"role": "user", "content": user}], reference=ref)


def _read_items(path: str, limit: Optional[int]) -> list[_Item]:
    """Prompts (+ references) from a dataset file, via the training loader, else the answer-less shapes above."""
    from tuneforge.data.catalog import DatasetSpec, load_dataset
    from tuneforge.data.render import template_messages
    from tuneforge.data.sources import read_rows

    try:
        records = load_dataset(DatasetSpec(path=path, max_samples=limit)).records
    except DataError as first:
        items = []
        try:
            for row in read_rows(path):
                if row.error is not None:
                    raise row.error
                items.append(_loose_item(row.data, row.file, row.line))
                if limit and len(items) >= limit:
                    break
        except DataError:
            raise first from None
        return items
    items = []
    for r in records:
        if r.text is not None and not r.messages:
            items.append(_Item(r.source, text=r.text))
            continue
        msgs, ref = template_messages(r.messages), None
        if msgs and msgs[-1]["role"] == "assistant":
            ref, msgs = msgs[-1]["content"], msgs[:-1]
        items.append(_Item(r.source, messages=msgs, reference=ref, tools=r.tools))
    return items


def _run_generation(engine, items: list[_Item], **kw) -> list[dict]:
    from tuneforge.data.templates import render_prompt

    chat = [i for i, it in enumerate(items) if it.messages is not None]
    raw = [i for i, it in enumerate(items) if it.messages is None]
    gens = {}
    if chat:
        gens.update(zip(chat, engine.generate([items[i].messages for i in chat],
                                              tools=[items[i].tools for i in chat], **kw)))
    if raw:
        gens.update(zip(raw, engine.complete([items[i].text for i in raw], **kw)))
    rows = []
    for i, it in enumerate(items):
        g = gens[i]
        prompt = render_prompt(engine.tokenizer, it.messages, it.tools) if it.messages is not None else it.text
        row = {"index": i, "source": it.source,
               **({"messages": it.messages} if it.messages is not None else {"text": it.text}),
               "prompt": prompt, "reference": it.reference, "prediction": g.text, "finish_reason": g.finish_reason,
               "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens}
        rows.append(row)
    return rows


def _write_jsonl(rows: list[dict], out: Path) -> None:
    from tuneforge.utils.io import atomic_write_text

    atomic_write_text(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def chat_cmd(
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    adapter: Optional[str] = typer.Option(None, "--adapter", "-a", help=ADAPTER_HELP),
    template: str = typer.Option("auto", "--template", "-t", help=TEMPLATE_HELP),
    system: Optional[str] = typer.Option(None, "--system", "-s", help="system prompt kept across /reset"),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", help="longest answer, in tokens"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy (default); 0.7 = varied"),
    top_p: float = typer.Option(1.0, "--top-p", help=TOP_P_HELP),
    seed: Optional[int] = typer.Option(None, "--seed", help=SEED_HELP),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", help=REPETITION_HELP),
    device: str = typer.Option("auto", "--device", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, …"),
) -> None:
    from tuneforge.data.templates import ensure_chat_template, template_name
    from tuneforge.infer.engine import Engine, Sampling

    Sampling(temperature, top_p, repetition_penalty, seed)  # bad values fail before the model loads
    model = _base_model(model, adapter)
    engine = Engine.load(model, _adapter_dir(adapter), template=template, device=device)
    ensure_chat_template(engine.tokenizer, "auto")  # a model without a template fails here, with the fix
    console.print(f"[dim]{model}{' + ' + adapter if adapter else ''} · template "
                  f"{template_name(engine.tokenizer) or 'model own'} · {engine.device} · "
                  "/reset clears, /exit quits[/dim]")
    _chat_loop(engine, system, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
               repetition_penalty=repetition_penalty)


def generate_cmd(
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    data: str = typer.Option(..., "--data", "-d", help="input file or folder (formats above)"),
    out: Path = typer.Option(..., "--out", "-o", help="output .jsonl file"),
    adapter: Optional[str] = typer.Option(None, "--adapter", "-a", help=ADAPTER_HELP),
    template: str = typer.Option("auto", "--template", "-t", help=TEMPLATE_HELP),
    batch_size: int = typer.Option(8, "--batch-size", help="prompts per forward pass (lower it on OOM)"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="longest answer, in tokens"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy (default)"),
    top_p: float = typer.Option(1.0, "--top-p", help=TOP_P_HELP),
    seed: Optional[int] = typer.Option(None, "--seed", help=SEED_HELP),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", help=REPETITION_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help="only the first N rows"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out file"),
    device: str = typer.Option("auto", "--device", help="auto (cuda > mps > cpu), cpu, cuda, …"),
) -> None:
    from tuneforge.infer.engine import Engine, Sampling

    if out.exists() and not overwrite:
        raise DataError(f"{out} already exists; refusing to overwrite it", hint="pass --overwrite or another --out")
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be at least 1, got {limit}")
    Sampling(temperature, top_p, repetition_penalty, seed)  # bad values fail before the model loads
    items = _read_items(data, limit)
    model = _base_model(model, adapter)
    engine = Engine.load(model, _adapter_dir(adapter), template=template, device=device)
    rows = _run_generation(engine, items, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                           seed=seed, repetition_penalty=repetition_penalty, batch_size=batch_size, progress=True)
    _write_jsonl(rows, out)
    stopped = sum(r["finish_reason"] == "stop" for r in rows)
    console.print(f"wrote {len(rows)} generations to {out} ({stopped} stopped, {len(rows) - stopped} hit "
                  f"--max-new-tokens {max_new_tokens})")


def export_cmd(
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + "; or a full fine-tuned model "
                                                                                "folder"),
    out: str = typer.Option(..., "--out", "-o", help="destination folder (created; must be new or empty; "
                                                     "--format gguf: may hold earlier GGUF exports of the model)"),
    adapter: Optional[str] = typer.Option(None, "--adapter", "-a", help=ADAPTER_HELP),
    dtype: str = typer.Option("auto", "--dtype", help="auto (the base model's stored dtype), float32, "
                                                      "bfloat16 or float16 (gguf: of merged/)"),
    template: str = typer.Option("auto", "--template", "-t", help=TEMPLATE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a non-empty --out folder"),
    check_samples: int = typer.Option(4, "--check-samples", help="sample conversations in the parity check"),
    device: str = typer.Option("auto", "--device", help="auto (cuda > mps > cpu), cpu, cuda, …"),
    fmt: str = typer.Option("hf", "--format", help="hf (a Hugging Face folder), gguf (llama.cpp), ollama (gguf + "
                                                   "a Modelfile)"),
    quant: Optional[str] = typer.Option(None, "--quant", help="with --format gguf: f16 (default), f32, bf16, q8_0, "
                                                               "q4_0, q4_1"),
    ollama: bool = typer.Option(False, "--ollama", help="with --format gguf: also write an Ollama Modelfile"),
) -> None:
    from tuneforge.export.merge import merge_adapter

    if fmt not in ("hf", "gguf", "ollama"):
        raise ModelError(f"unknown --format {fmt}", hint="choose hf, gguf or ollama")
    if fmt == "hf" and (quant or ollama):
        raise ModelError("--quant and --ollama apply to --format gguf", hint="add --format gguf")
    if fmt != "hf" and overwrite:
        raise ModelError("--overwrite does not apply to --format gguf: a GGUF export never overwrites a file",
                         hint="delete the old files, or export into another --out folder")
    if adapter and not Path(_adapter_dir(adapter)).is_dir():
        raise ModelError(f"adapter folder {adapter} does not exist")
    model = _base_model(model, adapter)
    if fmt != "hf":
        from tuneforge.export.gguf import export_gguf

        g = export_gguf(model, _adapter_dir(adapter), out, quant=quant or "f16", ollama=ollama or fmt == "ollama",
                        dtype=dtype, template=template, check_samples=check_samples, device=device)
        console.print(g.summary())
        typer.echo(g.gguf)
        return
    r = merge_adapter(model, _adapter_dir(adapter), out, dtype=dtype, overwrite=overwrite,
                      check_samples=check_samples, template=template, device=device)
    p = r.parity
    console.print(f"[green]exported[/green] {r.out} ({r.dtype})\n"
                  f"parity on {p.samples} samples / {p.tokens} tokens: max |Δlogit| vs base + adapter "
                  f"{p.max_abs_diff:.2e}; merge {p.merge_diff:.2e} (≤ 1e-3), reload {p.export_diff:.2e} "
                  f"(≤ {p.tolerance:g}) — passed"
                  + (f"\nrecorded as run {r.run_id[:8]} (`tuneforge runs lineage {r.run_id[:8]}`)" if r.run_id else ""))
    typer.echo(r.out)


def register(app: typer.Typer) -> None:
    """Add the top-level commands chat, generate and export to `app`."""
    app.command("chat", help=CHAT_HELP)(chat_cmd)
    app.command("generate", help=GENERATE_HELP)(generate_cmd)
    app.command("export", help=EXPORT_HELP)(export_cmd)
