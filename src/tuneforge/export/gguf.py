"""`tuneforge export --format gguf`: a trained model as one GGUF file for llama.cpp (and Ollama), verified.

Steps, in folder `out` (named NAME below, after the folder):
1. `out/merged/`: the merged Hugging Face model (`export.merge.merge_adapter`, with its own parity check against
   base + adapter). A `merged/` left by an earlier export of the same model and adapter is reused, so one folder can
   hold several quantizations.
2. `out/NAME-QUANT.gguf`: written from `merged/` (`export.gguf_write`, tokenizer from `export.gguf_vocab`).
3. Verification (`export.gguf_verify`): read back through transformers and compared with `merged/`; the numbers go to
   `out/NAME-QUANT.check.json`.
4. With `ollama=True`, `out/NAME-QUANT.Modelfile` (`export.ollama`); the chat template is matched to a supported
   family before anything is written, so an unsupported one costs no time.

Existing output files are never overwritten. The GGUF is written under a hidden partial name and gets its real name
only once verified; when verification fails it is renamed `NAME-QUANT.gguf.failed` (kept for inspection, but no tool
picks it up as a model), the check file says why, no Modelfile is written, and a `GgufCheckError` is raised.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from tuneforge.export.gguf_verify import ENCODING_TOLERANCE, GgufCheck
from tuneforge.export.gguf_write import WriteSummary
from tuneforge.export.parity import ParityError
from tuneforge.utils.console import console
from tuneforge.utils.errors import ModelError


class GgufCheckError(ParityError):
    """A written GGUF does not reproduce the merged model within its bounds."""


@dataclass
class GgufExport:
    gguf: str
    merged: str
    quant: str
    write: WriteSummary
    check: GgufCheck
    modelfile: str | None
    run_id: str | None = None

    def summary(self) -> str:
        """What the CLI prints: the file, its tensor types and the verification against the merged model."""
        c, w = self.check, self.write
        types = ", ".join(f"{n} {t}" for t, n in sorted(w.types.items()))
        greedy = "same greedy text" if c.greedy_same else "greedy text differs (allowed for this type)"
        lines = [f"[green]exported[/green] {self.gguf} ({self.quant}, {w.bytes / 2**20:.1f} MiB; tensors: {types})",
                 f"verified on {c.samples} samples / {c.tokens} tokens: encoding {c.encoding_diff:.2e} "
                 f"(≤ 1e-3); vs merged max |Δlogit| {c.max_abs_diff:.3g} (≤ {c.bound.max_abs_diff:g}), top-1 "
                 f"{c.top1:.3f} (≥ {c.bound.min_top1:g}), {greedy} — passed"]
        if self.modelfile:
            lines.append(f"Ollama: ollama create NAME -f {self.modelfile}")
        if self.run_id:
            lines.append(f"recorded as run {self.run_id[:8]} (`tuneforge runs lineage {self.run_id[:8]}`)")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Paths:
    out: Path
    merged: Path
    gguf: Path
    partial: Path
    failed: Path
    check: Path
    modelfile: Path

    @classmethod
    def of(cls, out: Path, quant: str) -> "_Paths":
        stem = f"{out.name}-{quant}"
        return cls(out, out / "merged", out / f"{stem}.gguf", out / f".{stem}.partial.gguf",
                   out / f"{stem}.gguf.failed", out / f"{stem}.check.json", out / f"{stem}.Modelfile")

    def refuse_existing(self, ollama: bool) -> None:
        taken = [p for p in (self.gguf, self.failed, self.check) + ((self.modelfile,) if ollama else ())
                 if p.exists()]
        if taken:
            raise ModelError(f"{taken[0]} already exists; GGUF export never overwrites a file",
                             hint="delete it, or export into another --out folder")


def export_gguf(model: str, adapter: str | None, out: str, *, quant: str = "f16", ollama: bool = False,
                dtype: str = "auto", template: str = "auto", check_samples: int = 4,
                device: str = "auto") -> GgufExport:
    """Merge (or reuse `out/merged`), write `out/NAME-QUANT.gguf`, verify it, and with `ollama` add a Modelfile.

    Raises ModelError before any work for an unknown or K-quant `quant`, an existing output file, or an
    architecture the writer does not support; GgufCheckError when the written file fails verification."""
    from tuneforge.export.gguf_write import resolve_quant

    q = resolve_quant(quant)
    paths = _Paths.of(Path(out).expanduser().resolve(), q.name)
    paths.refuse_existing(ollama)
    _check_source_architecture(model)
    t0 = time.time()
    merge_run = _merged_folder(model, adapter, paths.merged, dtype=dtype, template=template,
                               check_samples=check_samples, device=device)
    tok, config = _merged_tokenizer_and_config(paths.merged)
    ollama_template = _ollama_template(tok) if ollama else None
    with _gguf_recorder(model, adapter, paths, q.name, merge_run) as recorder:
        summary, check = _write_and_verify(paths, q, tok, config, check_samples=check_samples, device=device)
        recorder.add_artifact("gguf", paths.gguf)
        modelfile = None
        if ollama_template is not None:
            from tuneforge.export.ollama import modelfile_text

            paths.modelfile.write_text(modelfile_text(paths.gguf.name, ollama_template), encoding="utf-8")
            modelfile = str(paths.modelfile)
    console.print(f"[dim]GGUF export took {time.time() - t0:.0f} s[/dim]")
    return GgufExport(str(paths.gguf), str(paths.merged), q.name, summary, check, modelfile, recorder.run_id)


def _check_source_architecture(model: str) -> None:
    """Refuse an unsupported architecture from the base model's config, before the merge spends any time (an earlier
    run's adapter given as the model is followed to its base)."""
    from transformers import AutoConfig

    from tuneforge.export.gguf_write import check_architecture
    from tuneforge.models.load import local_path
    from tuneforge.models.source import resolve_model

    src = resolve_model(model)
    while src.kind == "adapter" and src.base is not None:
        src = src.base
    try:
        config = AutoConfig.from_pretrained(local_path(src))
    except OSError:
        return  # the merge reports a model it cannot load, with its own hint
    check_architecture(config)


def _merged_folder(model: str, adapter: str | None, merged: Path, **merge_args) -> str | None:
    """Merge into `merged` unless it already holds this model + adapter (and the --template / --dtype asked for);
    returns the merge's run id when it merged now."""
    from tuneforge.export.merge import EXPORT_META, merge_adapter

    meta_file = merged / EXPORT_META
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        wanted = {"base": model, "adapter": str(Path(adapter).resolve()) if adapter else None}
        wanted.update({k: merge_args[k] for k, name in (("template", "chat_template"), ("dtype", "dtype"))
                       if merge_args.get(k, "auto") != "auto"})
        found = {k: meta.get("chat_template" if k == "template" else k) for k in wanted}
        if found == wanted and meta.get("parity", {}).get("passed"):
            console.print(f"[dim]reusing the merged model in {merged}[/dim]")
            return None
        raise ModelError(f"{merged} holds another merge ({found}, not {wanted}); GGUF export never overwrites it",
                         hint="export into another --out folder")
    console.print(f"merging into {merged} …")
    return merge_adapter(model, adapter, str(merged), **merge_args).run_id


def _merged_tokenizer_and_config(merged: Path):
    from transformers import AutoConfig, AutoTokenizer

    return AutoTokenizer.from_pretrained(merged), AutoConfig.from_pretrained(merged)


def _ollama_template(tok):
    from tuneforge.export.ollama import match_template

    return match_template(tok)


def _write_and_verify(paths: _Paths, q, tok, config, *, check_samples: int, device: str):
    """Write under the partial name, verify, then name the file for what it is (verified, or failed)."""
    from tuneforge.data.templates import template_stop_token_ids
    from tuneforge.export.gguf_verify import verify_gguf
    from tuneforge.export.gguf_vocab import vocab_from_tokenizer
    from tuneforge.export.gguf_write import write_gguf

    stops = template_stop_token_ids(tok) if getattr(tok, "chat_template", None) else []
    vocab = vocab_from_tokenizer(tok, config.vocab_size, stops)
    paths.partial.unlink(missing_ok=True)  # a leftover of an interrupted export of this same file
    console.print(f"writing {paths.gguf.name} ({q.name}) …")
    try:
        summary = write_gguf(paths.merged, paths.partial, q, name=paths.out.name, vocab=vocab)
    except BaseException:
        paths.partial.unlink(missing_ok=True)
        raise
    if summary.unblocked:
        console.print(f"[yellow]stored as f16 (rows not a multiple of the {q.name} block):[/yellow] "
                      + ", ".join(summary.unblocked))
    try:
        check = verify_gguf(paths.partial, paths.merged, q, check_samples=check_samples, device=device)
    except Exception as err:  # noqa: BLE001 - an unreadable file is a failed verification, reported as such
        _fail(paths, summary, None, [f"transformers could not read the file back: {err}"])
    if not check.passed:
        _fail(paths, summary, check, check.failures())
    paths.partial.rename(paths.gguf)
    summary.path = str(paths.gguf)
    _write_check(paths, summary, check, [])
    return summary, check


def _fail(paths: _Paths, summary: WriteSummary, check: GgufCheck | None, failures: list[str]) -> None:
    """Flag the file as failed (renamed, not deleted: the evidence stays) and raise."""
    paths.partial.rename(paths.failed)
    summary.path = str(paths.failed)
    _write_check(paths, summary, check, failures)
    quality_only = check is not None and check.encoding_diff <= ENCODING_TOLERANCE and not check.problems
    hint = (f"the file is written correctly but {check.quant} loses too much of this model: use a wider type "
            "(q8_0, f16), or make a K-quant from the f16 file with llama.cpp's llama-quantize" if quality_only
            else f"do not use this file; details in {paths.check}. Please report a bug with that file.")
    raise GgufCheckError(f"GGUF verification FAILED for {paths.failed.name}: " + "; ".join(failures), hint=hint)


def _write_check(paths: _Paths, summary: WriteSummary, check: GgufCheck | None, failures: list[str]) -> None:
    body = {"passed": not failures, "failures": failures, "write": summary.__dict__,
            "check": check.as_dict() if check is not None else None}
    paths.check.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


def _gguf_recorder(model: str, adapter: str | None, paths: _Paths, quant: str, merge_run: str | None):
    """A registry run (kind "export", tags export/gguf), child of the merge run or of the run that trained."""
    from tuneforge.registry.api import RunRecorder
    from tuneforge.registry.lineage import find_run_file

    run = find_run_file(adapter) or find_run_file(model)
    parent = merge_run or (run[1].get("run_id") if run else None)
    config = {"base": model, "adapter": str(Path(adapter).resolve()) if adapter else None, "format": "gguf",
              "quant": quant, "out": str(paths.gguf)}
    return RunRecorder.start(kind="export", config=config, base_model=model, base_model_identity=model,
                             method="lora-merged" if adapter else "full", output_dir=str(paths.out),
                             parent_run_id=parent, tags=["export", "gguf"])
