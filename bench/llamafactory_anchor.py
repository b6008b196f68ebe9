"""LLaMA-Factory's data preprocessing as the anchor of bench/data_prep.py, run in a virtual environment of its own.

LLaMA-Factory pins older libraries than tuneforge's (0.9.5: transformers <= 5.6, datasets <= 4.0, peft <= 0.18.1), so
its venv cannot hold tuneforge's exact versions. It keeps torch (2.13.0, the CPU wheel: `-c constraints.txt`, so pip
never resolves a CUDA torch) and, where LLaMA-Factory's pins allow it, the libraries that do the actual work of
preprocessing (tokenizers, pyarrow, numpy) at tuneforge's versions; everything else is what pip resolves inside
LLaMA-Factory's pins. The versions it got are recorded in the benchmark's JSON.

Why a driver and not `llamafactory-cli train`: in 0.9.5 `get_dataset` saves the tokenized data to `tokenized_path` and
then returns, so training goes on (model load, trainer). The driver (`python llamafactory_anchor.py CONFIG.json
RESULT.json`, run by the venv's python) calls exactly what `run_sft` calls before it loads the model:
`get_train_args` → `load_tokenizer` → `get_template_and_fix_tokenizer` → `get_dataset(stage="sft")`, then exits. It
never imports tuneforge.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LF_VERSION = "0.9.5"  # newest on PyPI (2026-12-02)
KEEP_EQUAL = ("tokenizers", "pyarrow", "numpy")  # tuneforge's versions, where LLaMA-Factory's pins allow them
RECORDED = ("llamafactory", "torch", "transformers", "tokenizers", "datasets", "pyarrow", "numpy", "peft",
            "accelerate", "trl")
TEMPLATE = "smollm2"  # LLaMA-Factory's SmolLM2 template: chatml turns, default system "... by Hugging Face."
READY = ".tuneforge-ready"  # written after a complete install: a venv whose pip failed half-way is redone


def anchors_dir() -> Path:
    return Path(os.environ.get("TUNEFORGE_ANCHORS", "/tmp/tuneforge-anchors"))


def _kept_pins() -> list[str]:
    from importlib import metadata

    return [f"{p}=={metadata.version(p).split('+')[0]}" for p in KEEP_EQUAL]


def lf_python() -> Path:
    """The python of the LLaMA-Factory venv, created when missing (about 2 minutes, 2.2 GB: gradio, modelscope, ...)."""
    kept = _kept_pins()
    key = hashlib.sha256(" ".join([f"llamafactory=={LF_VERSION}", "torch==2.13.0", *kept]).encode()).hexdigest()[:10]
    venv = anchors_dir() / f"llamafactory-{key}"
    python = venv / "bin" / "python"
    if (venv / READY).exists():
        return python
    print(f"creating the LLaMA-Factory venv {venv} (llamafactory=={LF_VERSION}, torch==2.13.0) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    base = [str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"),
            f"llamafactory=={LF_VERSION}", "torch==2.13.0"]
    while True:
        proc = subprocess.run(base + kept, capture_output=True, text=True)
        if proc.returncode == 0:
            break
        clash = [pin for pin in kept if pin in proc.stderr]  # pip names the pins it cannot combine with LF's
        if not clash:
            raise subprocess.CalledProcessError(proc.returncode, base + kept, proc.stdout, proc.stderr[-3000:])
        print(f"  {clash[0]} conflicts with llamafactory {LF_VERSION}'s pins: pip chooses that one", flush=True)
        kept.remove(clash[0])
    _drop_cuda_wheels(python)
    (venv / READY).write_text(json.dumps(versions(python)))
    return python


def _drop_cuda_wheels(python: Path) -> None:
    """Remove torchvision and torchaudio, which LLaMA-Factory's pins pull from PyPI as CUDA builds: their compiled
    parts do not load against the CPU torch (`operator torchvision::nms does not exist`); CPU builds are only on
    download.pytorch.org.
    Text preprocessing uses neither; `llamafactory.data.mm_plugin` imports torchaudio at the top (for audio inputs
    only), so an empty stand-in module takes its place. Without dist-info, transformers sees neither as installed."""
    subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio"], check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    stub = Path(site) / "torchaudio"
    stub.mkdir(exist_ok=True)
    (stub / "__init__.py").write_text(
        '"""Stand-in written by tuneforge bench/llamafactory_anchor.py: the CUDA wheel of PyPI does not load on the '
        'CPU torch, and text preprocessing never calls torchaudio."""\n\n\ndef __getattr__(name):\n'
        '    raise ImportError(f"torchaudio.{name}: torchaudio is a stand-in in this benchmark venv")\n')


def versions(python: Path) -> dict[str, str]:
    """The versions of RECORDED packages installed in the venv of `python`."""
    code = ("import json, importlib.metadata as m\nout = {}\nfor p in %r:\n    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: pass\nprint(json.dumps(out))") % (RECORDED,)
    return json.loads(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout)


def write_inputs(data: Path, model: Path, work: Path, cutoff: int, num_proc: int, system: str | None) -> Path:
    """dataset_info.json registering `data` (alpaca) and the driver's config; → the config file."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "dataset_info.json").write_text(json.dumps(
        {"synthetic_alpaca": {"file_name": str(data.resolve()), "formatting": "alpaca"}}, indent=1))
    cfg = {"model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "lora",
           "dataset": "synthetic_alpaca", "dataset_dir": str(work), "template": TEMPLATE, "cutoff_len": cutoff,
           "preprocessing_num_workers": num_proc, "overwrite_cache": True, "tokenized_path": str(work / "tokenized"),
           "output_dir": str(work / "output"), "report_to": "none", "overwrite_output_dir": True}
    if system is not None:  # the model's own default system prompt, so both sides render the same text
        cfg["default_system"] = system
    path = work / "lf_config.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def _drive(config: Path, result: Path) -> None:
    """Run in the LLaMA-Factory venv: the first steps of LLaMA-Factory's `run_sft`, up to the tokenized dataset."""
    import time

    t0 = time.perf_counter()
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    t_import = time.perf_counter() - t0
    model_args, data_args, training_args, _, _ = get_train_args(json.loads(config.read_text()))
    tokenizer_module = load_tokenizer(model_args)
    tokenizer = tokenizer_module["tokenizer"]
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    train = module["train_dataset"]
    first = train[0]
    result.write_text(json.dumps({
        "train_items": len(train), "import_s": t_import, "seconds": time.perf_counter() - t0,
        "first_text": tokenizer.decode(first["input_ids"]), "first_input_ids": first["input_ids"],
        "first_labels": first["labels"]}))


if __name__ == "__main__":
    _drive(Path(sys.argv[1]), Path(sys.argv[2]))
