#!/usr/bin/env python
"""SFT throughput benchmark: tuneforge (unpacked, packed) against a minimal hand-written PyTorch loop, TRL's
SFTTrainer and LLaMA-Factory (each unpacked and packed).

Every contestant trains the same model with the same LoRA setup (r=8, alpha 16, all-linear, dropout 0, fp32, no
gradient checkpointing) on the same rows with the same batch size, each in its own process (so its peak RSS is its
own). The processes run in lockstep: the parent hands a "go" token to one of them at a time, round after round
(U H P [R] TU TP LU LP, U H P ...), so every contestant sees the same background load and no two contestants ever
compete for the CPU.

Contestants
  tf_unpacked  `tuneforge.train.runner.train` as a user runs it (prepare_data, TuneforgeTrainer, PadCollator,
               length grouping, progress bar, metrics JSONL, TensorBoard, registry), data.packing=false.
  hand         minimal loop: AdamW, model(**batch).loss.backward(), optimizer step, its own padding — on exactly
               the batches `tf_unpacked` drew in the same round (checked against tuneforge's token counter).
  tf_packed    `runner.train` with data.packing=true.
  hand_random  (--random) the minimal loop on randomly ordered batches (no length grouping).
  NAME@PATCH   a tuneforge contestant with a benchmark-only monkeypatch modelling a proposed fix (see PATCHES).
  trl_unpacked TRL's SFTTrainer in its own venv (bench/anchors.py: tuneforge's library versions), run by
               bench/sft_anchor_child.py, on the rows tuneforge trains on as prompt-completion conversations
               (loss on the answer), length-grouped batches (--anchor-order).
  trl_packed   the same with packing=True (TRL's default BFD packing, padding-free: one flattened row per batch).
  lf_unpacked  LLaMA-Factory 0.9.5 in its own venv (bench/llamafactory_anchor.py) through `run_exp`, template
               smollm2 with the model's default system prompt, length-grouped batches.
  lf_packed    the same with neat_packing (packs without attention across samples; --lf-packing plain: packing).

A step is timed from the moment its process gets the "go" token to the end of its optimizer step, so all per-step
framework work (logging and callbacks of the previous step, batch fetching, collation) is inside the measured
time (the anchors' callback waits at the same points). Real tokens are the non-padding tokens of the batch. Each
process runs one untimed pre-warm forward/backward first; --warmup N also drops the first N timed rounds. Ratios are
medians over rounds of per-round ratios (for unpacked/hand each round pairs the identical batch, run seconds apart).
The ceiling is the real tok/s a LoRA step could reach at the machine's matmul peak (--peak-gflops / (4 x params)).

    python bench/sft_throughput.py                  # default: ~10 min on a quiet 2-core machine (--budget-s)
    python bench/sft_throughput.py --quick          # smoke run (< 3 min once the anchor venvs exist)
    python bench/sft_throughput.py --contestants tf_unpacked,hand,tf_packed   # without the anchors
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_pipe import TRIM_ENV, Channel, cpu_since, peak_rss_mb, release_free_memory, rss_mb

ROOT = Path(__file__).resolve().parents[1]
# order within a round: hand follows tf_unpacked
CONTESTANTS = ("tf_unpacked", "hand", "tf_packed", "hand_random", "trl_unpacked", "trl_packed", "lf_unpacked",
               "lf_packed")
ANCHORS = {"trl_unpacked": "trl", "trl_packed": "trl", "lf_unpacked": "lf", "lf_packed": "lf"}
UNPACKED = ("tf_unpacked", "hand", "hand_random", "trl_unpacked", "lf_unpacked")
DEFAULT_DATA = ("llamafactory_demo/alpaca_en_demo.json", "llamafactory_demo/identity.json")


# ----------------------------------------------------------------------------------------------- child: plumbing

def prewarm(model, items: list[dict]) -> None:
    """One untimed forward+backward on a small batch (no optimizer step, gradients dropped): thread pools,
    kernels and first-touch page faults happen here instead of in the first timed step."""
    import torch

    ids = torch.tensor([items[0]["input_ids"][:32]] * 2)
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids.clone())
    out.loss.backward()
    model.zero_grad(set_to_none=True)
    release_free_memory()


def bench_config(spec: dict, packing: bool, out_dir: str):
    from tuneforge.config.load import load_config

    overrides = [
        f"model.name={spec['model']}", f"model.template={spec['template']}",
        f"data.train={json.dumps(spec['data'])}", f"data.cutoff_len={spec['cutoff']}", f"data.packing={packing}",
        "method.type=lora", "method.r=8", "method.target_modules=all-linear", "method.dropout=0.0",
        "train.precision=fp32", "train.gradient_checkpointing=false", f"train.batch_size={spec['batch_size']}",
        f"train.learning_rate={spec['lr']}", "train.epochs=1", f"train.max_steps={spec['steps']}",
        f"train.seed={spec['seed']}", f"output.dir={out_dir}", "output.overwrite=true",
    ]
    if spec.get("max_samples"):
        overrides.append(f"data.max_samples={spec['max_samples']}")
    return load_config(None, overrides)


class Stepper:
    """The child's side of the lockstep: wait for "go", time the step, report it."""

    def __init__(self, chan: Channel):
        self.chan = chan
        self.t0, self.c0 = 0.0, None
        self.msg: dict = {}

    def wait(self) -> bool:
        """Block for the next token; True = run a step, False = finish."""
        self.msg = self.chan.recv()
        self.t0, self.c0 = time.perf_counter(), os.times()
        return self.msg.get("cmd") == "go"

    def report(self, step: int, real: int, padded: int, **extra):
        wall, cpu = time.perf_counter() - self.t0, cpu_since(self.c0)
        release_free_memory()  # outside the timed window: the parent waits for this report
        self.chan.send(kind="step", step=step, wall=wall, **cpu, real=real, padded=padded,
                       idle_rss_mb=rss_mb(), **extra)


def apply_patches(names: list[str]) -> None:
    """Benchmark-only monkeypatches that model proposed fixes (see bench/README.md)."""
    for name in names:
        if name not in PATCHES:
            raise SystemExit(f"unknown patch {name!r}; known: {', '.join(PATCHES)}")
        PATCHES[name]()


def trained_positions_loss(trainer, model, inputs, num_items_in_batch):
    """Causal-LM loss that runs the output layer and the softmax only where a label is trained.

    Same value as the model's own loss (sum over trained positions / num_items_in_batch); returns None when the
    fast path does not apply, so the caller falls back to the stock path.
    """
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base, "config", None)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if (decoder is None or head is None or "labels" not in inputs or trainer.args.world_size > 1
            or trainer.label_smoother is not None or trainer.compute_loss_func is not None
            or getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None)
            or getattr(cfg, "is_encoder_decoder", False)):
        return None
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    hidden = decoder(**inputs, use_cache=False).last_hidden_state
    target = labels[:, 1:]
    keep = target.ne(-100)
    logits = head(hidden[:, :-1][keep]).float()
    loss = F.cross_entropy(logits, target[keep], reduction="sum")
    return loss / (num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1))


def _patch_trained_logits():
    from tuneforge.stages.trainer import CausalLMTrainer, TuneforgeTrainer

    stock = TuneforgeTrainer.compute_loss  # the model's own loss: what CausalLMTrainer falls back to

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not return_outputs and model.training:
            loss = trained_positions_loss(self, model, inputs, num_items_in_batch)
            if loss is not None:
                return loss
        return stock(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    CausalLMTrainer.compute_loss = compute_loss  # pt/sft build this Trainer


def _patch_sdpa_attention():
    """train.attention auto as it was before varlen: sdpa with the block-diagonal mask for packed rows too."""
    from tuneforge.train import cpu_runtime

    cpu_runtime.attention_kernel = lambda setting, packing=False: "sdpa" if setting == "auto" else setting


def _patch_peft_lora():
    """LoRA layers through PEFT's own forward, as before train.lora_kernel's fused default."""
    from tuneforge.train import cpu_runtime, runner

    runner.use_lora_kernel = lambda model, kernel: cpu_runtime.use_lora_kernel(model, "peft")


def _patch_glibc_default():
    """glibc's malloc with its own settings, as before train.allocator=auto kept freed memory."""
    from tuneforge.train import cpu_runtime

    cpu_runtime.keep_freed_memory = lambda setting, **kw: False


PATCHES: dict = {"trained_logits": _patch_trained_logits, "sdpa_attention": _patch_sdpa_attention,
                 "peft_lora": _patch_peft_lora, "glibc_default": _patch_glibc_default}


# ----------------------------------------------------------------------------------------- child: tuneforge

def run_tuneforge(spec: dict, chan: Channel, packing: bool, patches: list[str]) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    from transformers import TrainerCallback

    from tuneforge.data import collate
    from tuneforge.stages import trainer as stage_trainer
    from tuneforge.stages.trainer import ListDataset
    from tuneforge.train import cpu_runtime, runner

    apply_patches(patches)
    stepper = Stepper(chan)
    batches: list[list[int]] = []  # dataset indices of each collated batch, in order
    datasets: list = []
    counters: list = []

    # Bookkeeping only (no behaviour change): which samples each batch held, and tuneforge's own token counter.
    # The index is noted when an item is fetched: memory-mapped items (the data cache) are new dicts on every read.
    class RecordingDataset(ListDataset):
        def __init__(self, items):
            super().__init__(items)
            self.fetched: dict[int, int] = {}
            datasets.append(self)

        def __getitem__(self, i):
            item = super().__getitem__(i)
            self.fetched[id(item)] = i
            return item

    class RecordingCollator(collate.PadCollator):
        def __call__(self, items):
            batches.append([datasets[-1].fetched.pop(id(it)) for it in items])
            return super().__call__(items)

    class RecordingCounter(runner.TokenCounter):
        def __init__(self):
            super().__init__()
            counters.append(self)

    # the pt/sft stages import these when they build their Trainer (stages/causal.py)
    stage_trainer.ListDataset = RecordingDataset
    collate.PadCollator = RecordingCollator
    runner.TokenCounter = RecordingCounter
    seen = {"real": 0, "padded": 0}
    losses: list[list] = []

    class Lockstep(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            t = time.perf_counter()
            prewarm(model, datasets[-1].items)
            chan.send(kind="ready", setup_s=time.perf_counter() - T_CHILD[0], prewarm_s=time.perf_counter() - t,
                      n_params=frozen_params(model))
            if not stepper.wait():
                control.should_training_stop = True

        def on_step_end(self, args, state, control, **kw):
            idx = batches[state.global_step - 1]
            lens = [len(datasets[-1].items[i]["input_ids"]) for i in idx]
            c = counters[-1]  # what TuneforgeTrainer counted for this step
            real, padded = c.real_tokens - seen["real"], c.padded_tokens - seen["padded"]
            seen.update(real=c.real_tokens, padded=c.padded_tokens)
            if (real, padded) != (sum(lens), len(lens) * max(lens)):
                raise RuntimeError(f"step {state.global_step}: recorded batch {idx} does not match tuneforge's "
                                   f"token counter ({real}, {padded})")
            stepper.report(state.global_step, real, padded, batch=idx)
            if not stepper.wait():
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append([state.global_step, float(logs["loss"])])

    out = Path(spec["workdir"]) / f"run-{spec['name']}"
    cfg = bench_config(spec, packing, str(out))
    cpu_runtime.keep_freed_memory(cfg.train.allocator, own_process=True)  # as `tuneforge train` starts
    result = runner.train(cfg, extra_callbacks=[Lockstep()])
    m = result.metrics
    chan.send(kind="done", peak_rss_mb=peak_rss_mb(), status=result.status,
              runner={"real_tokens": m.get("real_tokens"), "padding_fraction": m.get("padding_fraction"),
                      "train_runtime": m.get("train_runtime"), "train_loss": m.get("train_loss")},
              n_items=len(datasets[-1].items), losses=losses)


def frozen_params(model) -> int:
    """Parameters of the base model (the frozen ones under LoRA): what the physical ceiling is computed from."""
    return sum(p.numel() for p in model.parameters() if not p.requires_grad)


# ----------------------------------------------------------------------------------------- child: hand loop

def pad_batch(items: list[dict], pad_id: int):
    import torch

    n = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), n), pad_id, dtype=torch.long)
    labels = torch.full((len(items), n), -100, dtype=torch.long)
    mask = torch.zeros((len(items), n), dtype=torch.long)
    for b, it in enumerate(items):
        k = len(it["input_ids"])
        ids[b, :k] = torch.tensor(it["input_ids"])
        labels[b, :k] = torch.tensor(it["labels"])
        mask[b, :k] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def run_hand(spec: dict, chan: Channel, random_order: bool) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    from transformers import set_seed

    from tuneforge.data.templates import ensure_chat_template
    from tuneforge.methods import apply_method
    from tuneforge.models.load import load_model, load_tokenizer
    from tuneforge.models.source import resolve_model
    from tuneforge.stages import stage_and_params
    from tuneforge.train.data_prep import prepare_data

    cfg = bench_config(spec, False, str(Path(spec["workdir"]) / f"run-{spec['name']}"))
    src = resolve_model(cfg.model.name)
    tok = load_tokenizer(src)
    ensure_chat_template(tok, cfg.model.template)
    items = prepare_data(cfg, tok, *stage_and_params(cfg)).train  # the samples (same indices) the runner trains on
    model = load_model(src, dtype="float32", device="cpu")
    set_seed(cfg.train.seed)
    model = apply_method(model, cfg.method)  # same LoRA init as the runner (same seed before apply)
    model.config.use_cache = False  # as the Trainer does: no KV cache while training
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec["lr"], weight_decay=0.0)
    t = time.perf_counter()
    prewarm(model, items)
    prewarm_s = time.perf_counter() - t
    bs = spec["batch_size"]
    perm = torch.randperm(len(items), generator=torch.Generator().manual_seed(spec["seed"])).tolist()
    stepper = Stepper(chan)
    chan.send(kind="ready", setup_s=time.perf_counter() - T_CHILD[0], prewarm_s=prewarm_s,
              n_params=frozen_params(model))
    step = 0
    while stepper.wait():
        step += 1
        if random_order:
            start = ((step - 1) * bs) % len(perm)
            idx = (perm + perm)[start:start + bs]
        else:
            idx = stepper.msg["batch"]
        batch = pad_batch([items[i] for i in idx], tok.pad_token_id)
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        stepper.report(step, int(batch["attention_mask"].sum()), int(batch["input_ids"].numel()), loss=loss.item())
    chan.send(kind="done", peak_rss_mb=peak_rss_mb(), n_items=len(items))


T_CHILD = [0.0]


def child_main(argv: list[str]) -> None:
    T_CHILD[0] = time.perf_counter()
    role, rfd, wfd, spec_path = argv[0], int(argv[1]), int(argv[2]), argv[3]
    spec = json.loads(Path(spec_path).read_text())
    chan = Channel(rfd, wfd)
    base, _, patch_list = role.partition("@")
    patches = [p for p in patch_list.split("+") if p]
    if base == "tf_unpacked":
        run_tuneforge(spec, chan, False, patches)
    elif base == "tf_packed":
        run_tuneforge(spec, chan, True, patches)
    elif base == "hand":
        run_hand(spec, chan, False)
    elif base == "hand_random":
        run_hand(spec, chan, True)
    else:
        raise SystemExit(f"unknown role {role}")


# ----------------------------------------------------------------------------------------------- parent

class ForkedProc:
    """The few Popen methods the parent uses, for a child made with os.fork()."""

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = time.monotonic() + (timeout or 1e9)
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"child {self.pid} did not exit")
            time.sleep(0.05)
        return self.returncode

    def kill(self):
        if self.poll() is None:
            os.kill(self.pid, 9)
            self.wait()


CHILD_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "PYTHONUNBUFFERED": "1"}
# LLaMA-Factory 0.9.5 checks its transformers version against a list; its venv holds what pip chose within its pins
ANCHOR_ENV = {"HF_DATASETS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1", "LLAMAFACTORY_VERBOSITY": "WARN"}


def preload() -> None:
    """Import what every contestant imports, once, before forking (no torch op runs in the parent)."""
    os.environ.update(CHILD_ENV)
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import tuneforge.data.templates  # noqa: F401
    import tuneforge.methods  # noqa: F401
    import tuneforge.registry.api  # noqa: F401
    import tuneforge.train.runner  # noqa: F401


class Child:
    """One contestant in its own process: forked from the parent after `preload` (default), or a fresh
    interpreter (--exec; always for an anchor: `python` of its venv runs sft_anchor_child.py). Either way its peak
    RSS (VmHWM) is its own address space's."""

    def __init__(self, name: str, spec: dict, workdir: Path, use_exec: bool = False, python: Path | None = None):
        self.name = name
        self.log = workdir / f"{name}.log"
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        spec_path = workdir / f"spec-{name}.json"
        spec_path.write_text(json.dumps({**spec, "name": name.replace("@", "_").replace("+", "_")}))
        env = {**CHILD_ENV, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"]),
               "TUNEFORGE_REGISTRY_URL": f"sqlite:///{workdir / 'registry.db'}"}
        argv = [name, str(p2c_r), str(c2p_w), str(spec_path)]
        if python is not None:  # an anchor: its own venv, nothing of tuneforge's on its path
            env.update(ANCHOR_ENV, PYTHONPATH="", HF_DATASETS_CACHE=str(workdir / "hf_datasets_cache"))
            self.proc = subprocess.Popen([str(python), str(Path(__file__).resolve().with_name("sft_anchor_child.py")),
                                          *argv], pass_fds=(p2c_r, c2p_w), stdout=self.log.open("w"),
                                         stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=str(workdir))
        elif use_exec:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", *argv],
                                         pass_fds=(p2c_r, c2p_w), stdout=self.log.open("w"),
                                         stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=str(ROOT))
        else:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # child
                code = 1
                try:
                    os.close(p2c_w)
                    os.close(c2p_r)
                    fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(fd, 1)
                    os.dup2(fd, 2)
                    os.environ.update(env)
                    child_main(argv)
                    code = 0
                except BaseException:  # noqa: BLE001 - reported through the log; the parent sees EOF
                    import traceback

                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            self.proc = ForkedProc(pid)
        os.close(p2c_r)
        os.close(c2p_w)
        self.chan = Channel(c2p_r, p2c_w)
        self.steps: list[dict] = []
        self.done: dict = {}
        self.ready: dict = {}

    def recv(self, kind: str) -> dict:
        try:
            msg = self.chan.recv()
        except EOFError:
            self.proc.wait()
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-25:])
            why = " (killed: out of memory?)" if self.proc.returncode in (-9, 137) else ""
            raise ContestantDied(f"contestant {self.name} died (rc={self.proc.returncode}{why}); log {self.log}:"
                                 f"\n{tail}")
        if msg.get("kind") != kind:
            raise SystemExit(f"contestant {self.name}: expected {kind}, got {msg}")
        return msg

    def send(self, **msg) -> None:
        try:
            self.chan.send(**msg)
        except BrokenPipeError:
            pass  # the process is gone: recv says how

    def go(self, **extra) -> dict:
        self.send(cmd="go", **extra)
        msg = self.recv("step")
        self.steps.append(msg)
        return msg

    def finish(self) -> None:
        self.send(cmd="finish")
        self.done = self.recv("done")
        self.proc.wait(timeout=600)


class ContestantDied(Exception):
    """A contestant's process ended without answering (the message holds its exit status and log tail)."""


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def summarize(child: Child, warmup: int) -> dict:
    quiet = child.steps[warmup:]
    real, padded = sum(s["real"] for s in quiet), sum(s["padded"] for s in quiet)
    wall, cpu = sum(s["wall"] for s in quiet), sum(s["cpu"] for s in quiet)
    user, sys_ = sum(s["user"] for s in quiet), sum(s["sys"] for s in quiet)
    all_real, all_padded = sum(s["real"] for s in child.steps), sum(s["padded"] for s in child.steps)
    return {
        "quiet_steps": len(quiet),
        "tokens_per_s": real / wall if wall else float("nan"),
        "tokens_per_s_median_step": _median([s["real"] / s["wall"] for s in quiet]),
        "tokens_per_cpu_s": real / cpu if cpu else float("nan"),
        "tokens_per_user_s": real / user if user else float("nan"),
        "user_s": user,
        "sys_s": sys_,
        "sys_share": sys_ / cpu if cpu else float("nan"),
        "real_tokens_quiet": real,
        "padding_fraction": 1 - real / padded if padded else float("nan"),
        "padding_fraction_all_steps": 1 - all_real / all_padded if all_padded else float("nan"),
        "mean_step_s": wall / len(quiet) if quiet else float("nan"),
        "real_tokens_per_step": real / len(quiet) if quiet else float("nan"),
        "peak_rss_mb": child.done.get("peak_rss_mb"),
        "idle_rss_mb": max((s.get("idle_rss_mb", 0) for s in child.steps), default=None),
        "n_params": child.ready.get("n_params"),
        "train_items": child.done.get("n_items"),
        **loss_summary(child),
        "versions": child.ready.get("versions"),
        "setup_s": child.ready.get("setup_s"),
        "prewarm_s": child.ready.get("prewarm_s"),
        "runner": child.done.get("runner"),
        # tuneforge's own TokenCounter must agree with the benchmark's count of the same batches
        "runner_real_tokens_match": (None if not child.done.get("runner")
                                     else child.done["runner"].get("real_tokens") == all_real),
        "steps": child.steps,
    }


def loss_summary(child: Child) -> dict:
    """First and last training loss the contestant logged (the Trainer's logs, or the hand loop's own)."""
    losses = child.done.get("losses") or [[s["step"], s["loss"]] for s in child.steps if "loss" in s]
    finite = all(math.isfinite(x) for _, x in losses)
    return {"losses": losses, "first_loss": losses[0][1] if losses else None,
            "last_loss": losses[-1][1] if losses else None, "losses_finite": bool(losses) and finite}


def paired_ratio(num: Child, den: Child, warmup: int, key: str = "wall") -> float:
    """Median over rounds of (num tokens/s) / (den tokens/s), using wall (or cpu, or user) seconds."""
    rs = [(a["real"] / a[key]) / (b["real"] / b[key])
          for a, b in zip(num.steps[warmup:], den.steps[warmup:]) if a[key] > 0 and b[key] > 0]
    return _median(rs)


def aggregate_ratio(s_num: dict, s_den: dict) -> float:
    return s_num["tokens_per_s"] / s_den["tokens_per_s"]


def resolve_data(paths: list[str] | None) -> list[str]:
    if paths:
        return [str(Path(p).resolve()) for p in paths]
    from tuneforge.utils.paths import shared_dir

    shared = shared_dir()
    if shared is None:
        raise SystemExit("../shared/data not found: pass --data FILE [FILE ...] or set TUNEFORGE_SHARED")
    return [str(shared / "data" / p) for p in DEFAULT_DATA]


# ----------------------------------------------------------------------------------------------- parent: anchors

def anchors_dir() -> Path:
    return Path(os.environ.get("TUNEFORGE_ANCHORS", "/tmp/tuneforge-anchors"))


def anchor_model(name: str) -> str:
    """The model as an HF folder the anchors load: `name` itself when it is one, else written once by
    anchors.export_model (the quickstart model is a GGUF file only tuneforge dequantizes) — in a subprocess, so that
    no torch op runs in this parent before it forks the tuneforge contestants."""
    if (Path(name) / "config.json").exists():
        return str(Path(name).resolve())
    folder = anchors_dir() / f"model-{Path(name).name}"
    if not (folder / "config.json").exists():
        print(f"[bench] exporting {name} to {folder} for the anchors ...", flush=True)
        code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); from anchors import "
                "export_model; export_model(sys.argv[2], Path(sys.argv[3]))")
        subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent), name, str(folder)],
                       check=True, env={**os.environ, **CHILD_ENV})
    return str(folder)


def write_anchor_rows(spec: dict, workdir: Path) -> dict:
    """The rows tuneforge trains on (its loader: both files, max_samples, seed), as the anchors read them.

    TRL: conversational prompt-completion rows (the completion is the last assistant turn; TRL then computes the
    loss on it only, as tuneforge does on the answers). LLaMA-Factory: the same conversations in OpenAI-style
    sharegpt (`messages`), registered in a dataset_info.json by the child. No row is re-rendered or cut here: each
    framework applies its own chat template and its own truncation to `cutoff`."""
    from tuneforge.data.run_records import load_train_records

    records = load_train_records(bench_config(spec, False, str(workdir / "rows")))[0]
    convs = [[{"role": m["role"], "content": m["content"]} for m in r.messages] for r in records]
    convs = [c for c in convs if c and c[-1]["role"] == "assistant"]
    trl, lf = workdir / "rows_trl.jsonl", workdir / "rows_lf.jsonl"
    trl.write_text("".join(json.dumps({"prompt": c[:-1], "completion": c[-1:]}) + "\n" for c in convs),
                   encoding="utf-8")
    lf.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs), encoding="utf-8")
    return {"trl_rows": str(trl), "lf_rows": str(lf), "rows": len(convs), "records": len(records)}


def anchor_pythons(names: list[str]) -> dict[str, Path]:
    """The venv python of every anchor contestant; the venvs are created on first use (a few minutes, PyPI)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from anchors import anchor_python
    from llamafactory_anchor import lf_python

    kinds = {ANCHORS[n] for n in names if n in ANCHORS}
    try:
        made = {k: (anchor_python if k == "trl" else lf_python)() for k in sorted(kinds)}
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"could not create an anchor venv ({exc}); run without the anchors: --contestants "
                         f"tf_unpacked,hand,tf_packed") from exc
    return {n: made[ANCHORS[n]] for n in names if n in ANCHORS}


def prepare_anchors(a, spec: dict, workdir: Path) -> dict[str, Path]:
    """Venvs, model folder and rows for the anchor contestants in `a.contestants`; fills spec["anchor"]."""
    pythons = anchor_pythons(a.contestants)
    if not pythons:
        return {}
    rows = write_anchor_rows(spec, workdir)
    spec["anchor"] = {"model_dir": anchor_model(a.model), **rows, "lf_packing": a.lf_packing,
                      "unpacked_order": "group_by_length" if a.anchor_order == "grouped" else "random"}
    print(f"[bench] anchors: model {spec['anchor']['model_dir']}, {rows['rows']} rows "
          f"({', '.join(f'{n}: {p}' for n, p in pythons.items())})", flush=True)
    return pythons


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--template", default="auto", help="chat template (auto = the tokenizer's own)")
    p.add_argument("--data", nargs="+", help=f"dataset files (default: ../shared/data/{{{','.join(DEFAULT_DATA)}}})")
    p.add_argument("--steps", type=int, default=None, help="at most this many steps per contestant (default 8; "
                                                           "--quick 3)")
    p.add_argument("--warmup", type=int, default=None,
                   help="timed steps left out of the statistics, after the untimed pre-warm pass (default 2: a "
                        "fresh full-size process takes 2-3 steps to reach its speed; --quick 1)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no new round once the run would exceed this many seconds, after at least "
                        "warm-up + --min-quiet rounds (default 540; --quick 0 = no budget)")
    p.add_argument("--min-quiet", type=int, default=2, help="quiet rounds always run, whatever the budget")
    p.add_argument("--batch-size", type=int, default=None, help="default 8; --quick 4")
    p.add_argument("--cutoff", type=int, default=None, help="data.cutoff_len (default 512; --quick 64)")
    p.add_argument("--max-samples", type=int, default=None, help="data.max_samples (default all; --quick 128)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--contestants", default=None,
                   help=f"comma list from {','.join(CONTESTANTS)}; 'tf_unpacked@PATCH' adds a patched variant "
                        f"(default: all but hand_random; --random adds hand_random)")
    p.add_argument("--anchor-order", choices=("grouped", "random"), default="grouped",
                   help="batches of the unpacked anchors: the Trainer's length grouping (as tuneforge's default "
                        "train.group_by_length) or random order (the anchors' own default)")
    p.add_argument("--lf-packing", choices=("neat", "plain"), default="neat",
                   help="lf_packed: neat_packing (no attention across samples, as tuneforge's and TRL's packing) or "
                        "plain packing (samples in a pack attend to each other)")
    p.add_argument("--peak-gflops", type=float, default=150.0,
                   help="the machine's fp32 matmul peak, for the ceiling: real tok/s <= peak / (4 x parameters)")
    p.add_argument("--random", action="store_true",
                   help="add the hand_random contestant (costs about a third more time)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 3 steps (1 warm-up), batch 4, cutoff 64, 128 samples")
    p.add_argument("--out", default="bench/results.json")
    p.add_argument("--exec", action="store_true",
                   help="start each contestant as a fresh interpreter instead of forking after shared imports")
    p.add_argument("--keep", action="store_true", help="keep the work folder (child logs, run folders)")
    p.add_argument("--trim", choices=("auto", "always", "never"), default="auto",
                   help="malloc_trim each contestant after its step, so that the idle ones stay small: always, "
                        "never (each allocator behaves as in a real run), or auto: only when more than two "
                        "contestants run (two packed contestants peak at about 8 + 12 GB together)")
    a = p.parse_args(argv)
    q = a.quick
    a.steps = a.steps or (3 if q else 8)
    a.warmup = a.warmup if a.warmup is not None else (1 if q else 2)
    a.budget_s = a.budget_s if a.budget_s is not None else (0 if q else 540)
    a.cutoff = a.cutoff or (64 if q else 512)
    a.batch_size = a.batch_size or (4 if q else 8)
    a.max_samples = a.max_samples or (128 if q else None)
    if a.contestants:
        a.contestants = [c.strip() for c in a.contestants.split(",") if c.strip()]
    else:
        a.contestants = [c for c in CONTESTANTS if c != "hand_random" or a.random]
    if unknown := [c for c in a.contestants if not known_contestant(c)]:
        raise SystemExit(f"unknown contestants {unknown}; choose from {','.join(CONTESTANTS)}")
    if "hand" in a.contestants and "tf_unpacked" not in a.contestants:
        raise SystemExit("'hand' replays the batches of 'tf_unpacked': include both")
    if a.warmup >= a.steps:
        raise SystemExit("--warmup must be smaller than --steps")
    a.trim = a.trim == "always" or (a.trim == "auto" and len(a.contestants) > 2)
    return a


def known_contestant(name: str) -> bool:
    """A contestant of CONTESTANTS, or a tuneforge one with benchmark-only patches (NAME@PATCH+PATCH)."""
    base, patched, _ = name.partition("@")
    return base in CONTESTANTS and not (patched and base in ANCHORS)


def epoch_plan(spec: dict) -> dict:
    """Padding of a whole epoch's batches (no model): tuneforge's length-grouped order, random order, packed.

    The timed rounds see only the first batches of an epoch, and length grouping serves the longest batches
    first, so their padding is not the epoch's; this is the epoch's, from the same rendering and samplers.
    """
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from tuneforge.data.templates import ensure_chat_template
    from tuneforge.models.load import load_tokenizer
    from tuneforge.stages import stage_and_params
    from tuneforge.train.data_prep import prepare_data

    bs = spec["batch_size"]
    cfg = bench_config(spec, False, str(Path(spec["workdir"]) / "plan"))
    tok = load_tokenizer(cfg.model.name)
    ensure_chat_template(tok, cfg.model.template)
    lengths = [len(it["input_ids"]) for it in prepare_data(cfg, tok, *stage_and_params(cfg)).train]
    packed_cfg = bench_config(spec, True, "plan")
    packed = [len(it["input_ids"]) for it in prepare_data(packed_cfg, tok, *stage_and_params(packed_cfg)).train]

    def padding(lens, order):
        batches = [[lens[i] for i in order[k:k + bs]] for k in range(0, len(order), bs)]
        real, padded = sum(map(sum, batches)), sum(len(b) * max(b) for b in batches)
        return {"padding_fraction": 1 - real / padded, "batches": len(batches), "real_tokens": real,
                "mean_real_tokens_per_batch": real / len(batches)}

    g = torch.Generator().manual_seed(spec["seed"])
    return {"samples": len(lengths), "mean_len": sum(lengths) / len(lengths), "max_len": max(lengths),
            "grouped": padding(lengths, get_length_grouped_indices(lengths, bs, generator=g)),
            "random": padding(lengths, torch.randperm(len(lengths), generator=g).tolist()),
            "packed": padding(packed, torch.randperm(len(packed), generator=g).tolist())}


def physical_ceiling(summary: dict, peak_gflops: float) -> dict | None:
    """Real tokens/s a LoRA step could reach at the machine's matmul peak: forward 2N FLOPs per token, backward
    through the frozen weights another 2N (no weight gradients), so peak / (4N) with N the base model's parameters."""
    n = next((s["n_params"] for s in summary.values() if s.get("n_params")), None)
    if not n:
        return None
    return {"n_params": n, "peak_gflops": peak_gflops, "flops_per_token": 4 * n,
            "real_tokens_per_s": peak_gflops * 1e9 / (4 * n)}


def memory_estimate(summary: dict) -> dict | None:
    """Whether the lockstep fits in RAM: one contestant at its peak while all the others sit idle."""
    peaks = {n: s["peak_rss_mb"] for n, s in summary.items() if s.get("peak_rss_mb")}
    if not peaks:
        return None
    top = max(peaks, key=peaks.get)
    idle = sum(s.get("idle_rss_mb") or 0 for n, s in summary.items() if n != top)
    total = next((int(x.split()[1]) / 1024 for x in Path("/proc/meminfo").read_text().splitlines()
                  if x.startswith("MemTotal:")), float("nan"))
    return {"largest_peak": top, "largest_peak_mb": peaks[top], "others_idle_mb": idle,
            "worst_case_mb": peaks[top] + idle, "total_mb": total}


def real_token_consistency(summary: dict) -> dict:
    """Mean real tokens per quiet step of every unpacked contestant, relative to tf_unpacked's, and the steps whose
    real tokens equal tf_unpacked's. The anchors draw their own length-grouped batches of the same rows (the
    Trainer's sampler, seeded alike), so per step they should carry about as many tokens, often exactly as many."""
    ref = summary.get("tf_unpacked", {})
    ref_steps = ref.get("steps", [])
    return {n: {"real_tokens_per_step": s["real_tokens_per_step"],
                "vs_tf_unpacked": s["real_tokens_per_step"] / ref["real_tokens_per_step"] if ref else None,
                "steps_equal_real": sum(x["real"] == y["real"] for x, y in zip(s["steps"], ref_steps)),
                "steps_compared": min(len(s["steps"]), len(ref_steps))}
            for n, s in summary.items() if n.split("@")[0] in UNPACKED}


def fmt(x, spec=",.0f"):
    return "—" if x is None or x != x else format(x, spec)


def main(argv=None) -> dict:
    a = parse_args(argv if argv is not None else sys.argv[1:])
    data = resolve_data(a.data)
    workdir = Path(tempfile.mkdtemp(prefix="tf-bench-"))
    spec = {"model": a.model, "template": a.template, "data": data, "cutoff": a.cutoff, "batch_size": a.batch_size,
            "lr": a.lr, "steps": a.steps, "seed": a.seed, "threads": a.threads, "max_samples": a.max_samples,
            "workdir": str(workdir)}
    # hand must come right after tf_unpacked in each round (it replays that round's batch)
    order = sorted(a.contestants, key=lambda c: (CONTESTANTS.index(c.split("@")[0]), c))
    print(f"[bench] model {a.model}, data {', '.join(Path(d).name for d in data)}, batch {a.batch_size}, "
          f"cutoff {a.cutoff}, {a.steps} steps ({a.warmup} warm-up), {a.threads} threads; "
          f"contestants {', '.join(order)}; malloc_trim after steps {'on' if a.trim else 'off'}; "
          f"work folder {workdir}", flush=True)
    pythons = prepare_anchors(a, spec, workdir)  # before the clock: venvs are created on first use only
    t_start = time.perf_counter()
    os.environ[TRIM_ENV] = "1" if a.trim else "0"  # the children inherit it
    if not a.exec:
        preload()
        print(f"[bench] shared imports {time.perf_counter() - t_start:.0f}s", flush=True)
    children = {name: Child(name, spec, workdir, a.exec, pythons.get(name)) for name in order}
    dead: dict[str, str] = {}

    def drop(name: str, err: ContestantDied) -> None:
        """An anchor that dies (e.g. killed for memory) leaves the run; any other contestant ends it."""
        if name not in ANCHORS:
            raise SystemExit(str(err))
        print(f"[bench] {err}\n[bench] continuing without {name}", flush=True)
        dead[name] = str(err).splitlines()[0]

    try:
        for name, c in children.items():
            try:
                c.ready = c.recv("ready")
            except ContestantDied as err:
                drop(name, err)
        print(f"[bench] all contestants loaded in {time.perf_counter() - t_start:.0f}s; running rounds", flush=True)
        t_rounds = time.perf_counter()
        for r in range(1, a.steps + 1):
            elapsed = time.perf_counter() - t_start
            per_round = (time.perf_counter() - t_rounds) / (r - 1) if r > 1 else 0.0
            if r > a.warmup + a.min_quiet and a.budget_s and elapsed + per_round > a.budget_s:
                print(f"[bench] stopping after {r - 1} rounds: the next would end past the {a.budget_s:.0f}s "
                      f"budget (--budget-s)", flush=True)
                break
            line, batch = [], None
            for name, c in children.items():
                if name in dead:
                    continue
                base = name.split("@")[0]
                try:
                    msg = c.go(batch=batch) if base == "hand" else c.go()
                except ContestantDied as err:
                    drop(name, err)
                    continue
                if base == "tf_unpacked" and "@" not in name:
                    batch = msg["batch"]
                line.append(f"{name} {msg['real'] / msg['wall']:,.0f}")
            print(f"[bench] round {r}/{a.steps}: " + ", ".join(line) + " tok/s", flush=True)
        for name, c in children.items():
            try:
                if name not in dead:
                    c.finish()
            except ContestantDied as err:
                drop(name, err)
    finally:
        for c in children.values():
            if c.proc.poll() is None:
                c.proc.kill()
    # sanity: the hand loop really trained on the same real/padded tokens as tuneforge unpacked
    if "hand" in children:
        for a_s, b_s in zip(children["hand"].steps, children["tf_unpacked"].steps):
            if (a_s["real"], a_s["padded"]) != (b_s["real"], b_s["padded"]):
                raise SystemExit(f"hand loop batch differs from tuneforge's at step {a_s['step']}: {a_s} vs {b_s}")
    w = a.warmup
    summary = {name: summarize(c, w) | ({"died": dead[name]} if name in dead else {})
               for name, c in children.items()}
    ratios = {}

    def add_ratio(key, num, den):
        if num in children and den in children:
            ratios[key] = {"median_round_wall": paired_ratio(children[num], children[den], w),
                           "median_round_cpu": paired_ratio(children[num], children[den], w, "cpu"),
                           "median_round_user": paired_ratio(children[num], children[den], w, "user"),
                           "aggregate_wall": aggregate_ratio(summary[num], summary[den]), "of": num, "to": den}

    add_ratio("unpacked_vs_hand", "tf_unpacked", "hand")
    add_ratio("packed_vs_unpacked", "tf_packed", "tf_unpacked")
    add_ratio("packed_vs_hand", "tf_packed", "hand")
    add_ratio("hand_grouped_vs_hand_random", "hand", "hand_random")
    add_ratio("packed_vs_hand_random", "tf_packed", "hand_random")
    for name in children:
        if "@" in name:
            base = name.split("@")[0]
            add_ratio(f"{name}_vs_{base}", name, base)
            if base == "tf_unpacked":
                add_ratio(f"{name}_vs_hand", name, "hand")
    for mode in ("unpacked", "packed"):
        anchors = [n for n in (f"trl_{mode}", f"lf_{mode}") if n in children]
        for anchor in anchors:
            add_ratio(f"{mode}_vs_{anchor}", f"tf_{mode}", anchor)
        anchors = [n for n in anchors if math.isfinite(summary[n]["tokens_per_s"])]
        if anchors:  # the faster anchor of this mode, by real tokens/s over the quiet rounds
            add_ratio(f"{mode}_vs_best_anchor", f"tf_{mode}", max(anchors, key=lambda n: summary[n]["tokens_per_s"]))
    targets = {"unpacked_vs_hand": 0.9, "packed_vs_unpacked": 1.5, "packed_vs_best_anchor": 1.3}
    ceiling = physical_ceiling(summary, a.peak_gflops)
    for row in summary.values():
        row["ceiling_share"] = row["tokens_per_s"] / ceiling["real_tokens_per_s"] if ceiling else None
    plan = epoch_plan(spec)
    result = {
        "benchmark": "sft_throughput",
        "config": {k: v for k, v in spec.items() if k not in ("workdir", "anchor")} | {
            "warmup": w, "method": "lora r=8 alpha 16 all-linear dropout 0", "precision": "fp32",
            "anchor_order": a.anchor_order, "lf_packing": a.lf_packing, "malloc_trim": a.trim},
        "rounds": min((len(c.steps) for n, c in children.items() if n not in dead), default=0),
        "died": dead,
        "epoch_plan": plan,
        "ceiling": ceiling,
        "memory": memory_estimate(summary),
        "unpacked_real_tokens": real_token_consistency(summary),
        "anchor_data": {k: v for k, v in spec.get("anchor", {}).items() if k not in ("trl_rows", "lf_rows")},
        "contestants": summary,
        "ratios": ratios,
        "targets": {k: {"target": t, "met": ratios.get(k, {}).get("median_round_wall", 0) >= t}
                    for k, t in targets.items() if k in ratios},
        "wall_s": time.perf_counter() - t_start,
        "host": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "workdir": str(workdir) if a.keep else None,
    }
    print_table(result)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"[bench] wrote {out} ({result['wall_s']:.0f}s)")
    if not a.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return result


def print_table(result: dict) -> None:
    rows = [("contestant", "tok/s", "tok/s med step", "tok/CPU-s", "tok/user-s", "sys share", "of ceiling",
             "padding", "real tok/step", "s/step", "peak RSS MB", "loss first → last")]
    for name, s in result["contestants"].items():
        loss = f"{fmt(s['first_loss'], '.3f')} → {fmt(s['last_loss'], '.3f')}"
        rows.append((name, fmt(s["tokens_per_s"]), fmt(s["tokens_per_s_median_step"]), fmt(s["tokens_per_cpu_s"]),
                     fmt(s["tokens_per_user_s"]), fmt(s["sys_share"], ".0%"),
                     fmt(s["ceiling_share"], ".0%"), fmt(s["padding_fraction"], ".1%"),
                     fmt(s["real_tokens_per_step"]), fmt(s["mean_step_s"], ".2f"), fmt(s["peak_rss_mb"]), loss))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(widths[0]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            print("  ".join("-" * x for x in widths))
    p = result.get("epoch_plan")
    if p:
        print(f"\nwhole-epoch padding ({p['samples']} samples, mean {p['mean_len']:.0f} tokens): length-grouped "
              f"{p['grouped']['padding_fraction']:.1%}, random order {p['random']['padding_fraction']:.1%}, "
              f"packed {p['packed']['padding_fraction']:.1%} (timed rounds cover only the first batches)")
    for name, why in (result.get("died") or {}).items():
        print(f"{name} left the run: {why}")
    m = result.get("memory")
    if m:
        trimmed = "after malloc_trim" if result["config"]["malloc_trim"] else "untrimmed"
        print(f"memory: largest peak {m['largest_peak_mb'] / 1024:.1f} GB + the others idle ({trimmed}) "
              f"{m['others_idle_mb'] / 1024:.1f} GB = {m['worst_case_mb'] / 1024:.1f} GB of "
              f"{m['total_mb'] / 1024:.1f} GB RAM")
    c = result.get("ceiling")
    if c:
        print(f"physical ceiling: {c['peak_gflops']:.0f} GFLOP/s / (4 x {c['n_params'] / 1e6:.1f}M parameters) = "
              f"{c['real_tokens_per_s']:.0f} real tok/s (--peak-gflops)")
    u = result.get("unpacked_real_tokens") or {}
    if len(u) > 1:
        print("unpacked real tokens per step vs tf_unpacked: " + ", ".join(
            f"{n} {fmt(v['vs_tf_unpacked'], '.2f')} ({v['steps_equal_real']}/{v['steps_compared']} steps equal)"
            for n, v in u.items() if n != "tf_unpacked"))
    print()
    width = max((len(k) for k in result["ratios"]), default=0) + 2
    for key, r in result["ratios"].items():
        t = result["targets"].get(key)
        goal = f"   target ≥ {t['target']}: {'met' if t['met'] else 'NOT met'}" if t else ""
        pair = f" ({r['to']})" if key.endswith("best_anchor") else ""
        print(f"{key:<{width}} median/round {r['median_round_wall']:.2f}  (CPU-time {r['median_round_cpu']:.2f}, "
              f"user-time {r['median_round_user']:.2f}, "
              f"aggregate {r['aggregate_wall']:.2f}){pair}{goal}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
    else:
        main()
