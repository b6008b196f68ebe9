"""The CPU side of a run: intra-op threads, the memory allocator, the attention and LoRA kernels — chosen, applied,
recorded.

Why an allocator switch: glibc's malloc serves big blocks (activations, logits: megabytes each) with mmap and gives
them back with munmap on free, so every step faults the same memory in again and the kernel zeroes it — on a CPU
SFT run that is a large share of the CPU time spent as system time. jemalloc and tcmalloc keep freed pages for
reuse. An allocator can only be swapped before the process starts (LD_PRELOAD), so `tuneforge train` restarts
itself once with it (`reexec_with_allocator`); MARKER in the environment stops a second restart.

glibc itself can keep freed memory too (`keep_freed_memory`, train.allocator=auto): blocks up to 32 MiB come from
the heap and the heap is never trimmed, so a training step reuses the pages of the step before it.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# Set in the restarted process: the allocator was asked for once, whatever came of it (no restart loops).
MARKER = "TUNEFORGE_ALLOCATOR_REEXEC"
# allocator → (library file names, most specific first; the Debian package that installs it)
ALLOCATORS = {
    "jemalloc": (("libjemalloc.so.2", "libjemalloc.so"), "libjemalloc2"),
    "tcmalloc": (("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so"),
                 "libtcmalloc-minimal4"),
}
# What train.allocator=auto uses. bench/cpu_knobs.py (SmolLM2 LoRA SFT, batch 8, cutoff 512, 2 rounds, alone,
# 2026-12-03): glibc 148 tok/s with 0.1% sys time and 9 page faults per step; jemalloc (decay off) 0.94x with
# 7.4% sys and 97,000 faults per step; tcmalloc 0.98x with the lowest peak RSS (8.8 GB vs 12.9 GB). So auto keeps
# glibc; tcmalloc is the switch for a run short of memory.
AUTO_ALLOCATOR = "system"
# Settings a preloaded allocator starts with unless the environment already sets them. jemalloc: never hand freed
# pages back (its default decays them within seconds, so a 200 MB tensor is faulted in again each time, as with
# glibc: 51,759 minor faults per allocation vs 586 with these settings). tcmalloc keeps them by default; its
# "large alloc" report would print a line for every logits tensor over 1 GiB.
ALLOCATOR_ENV = {"jemalloc": {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"},
                 "tcmalloc": {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}}
# allocator tunables recorded with a run (they too act only from the process start)
MALLOC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_",
              "MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "MALLOC_CONF", "TCMALLOC_RELEASE_RATE",
              "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD")


def library_dirs() -> list[str]:
    """Where allocator libraries are looked for: this Python's prefix (conda, venv base), then the system's."""
    dirs = [os.path.join(sys.base_prefix, "lib"), os.path.join(sys.prefix, "lib")]
    dirs += glob.glob("/usr/lib/*-linux-gnu") + ["/usr/lib64", "/usr/lib", "/usr/local/lib", "/lib64", "/lib"]
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def find_allocator(name: str, dirs: list[str] | None = None) -> str | None:
    """The path of allocator `name`'s shared library, or None when it is not installed."""
    names, _ = ALLOCATORS[name]
    for directory in library_dirs() if dirs is None else dirs:
        for file in names:
            path = os.path.join(directory, file)
            if os.path.isfile(path):
                return path
    return None


def loaded_allocator(maps: str = "/proc/self/maps") -> str:
    """The allocator mapped into this process (jemalloc / tcmalloc), else "system"."""
    try:
        text = Path(maps).read_text(errors="replace")
    except OSError:
        return "system"
    return next((name for name in ALLOCATORS if f"lib{name}" in text), "system")


@dataclass
class AllocatorChoice:
    wanted: str  # the allocator train.allocator resolves to: system | jemalloc | tcmalloc
    path: str | None  # its library, when found
    note: str  # why it is (or is not) in use, for the plan

    @property
    def preload(self) -> bool:
        return self.wanted != "system" and self.path is not None


def choose_allocator(setting: str, dirs: list[str] | None = None) -> AllocatorChoice:
    """train.allocator resolved against what is installed. auto: AUTO_ALLOCATOR (when found), else system."""
    if setting == "system" or (setting == "auto" and AUTO_ALLOCATOR == "system"):
        return AllocatorChoice("system", None, f"glibc malloc (train.allocator={setting})")
    if not sys.platform.startswith("linux"):
        return AllocatorChoice("system", None, f"the system's malloc ({setting} is preloaded on Linux only)")
    name = AUTO_ALLOCATOR if setting == "auto" else setting
    path = find_allocator(name, dirs)
    if path is None:
        package = ALLOCATORS[name][1]
        return AllocatorChoice(name, None, f"{name} is not installed (apt-get install {package}): glibc malloc")
    return AllocatorChoice(name, path, f"{name} ({path})")


def preload_env(setting: str, env: dict, loaded: str, dirs: list[str] | None = None) -> dict | None:
    """The environment to restart this process with so that train.allocator is preloaded, or None when no restart
    is needed or possible: system wanted, the library absent, already loaded, or this is the restart (MARKER)."""
    if env.get(MARKER):
        return None
    choice = choose_allocator(setting, dirs)
    if not choice.preload or loaded == choice.wanted:
        return None
    preloads = [p for p in env.get("LD_PRELOAD", "").split() if p]
    return {**ALLOCATOR_ENV[choice.wanted], **env, MARKER: choice.wanted,
            "LD_PRELOAD": " ".join([choice.path, *preloads])}


def launched_as_program() -> bool:
    """Whether this process is the `tuneforge` program itself (`tuneforge …`, `python -m tuneforge …`, torchrun
    -m tuneforge), not a host that calls the command in-process (pytest's CliRunner, a notebook): restarting a
    host would run all of it again."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return (spec is not None and spec.name in ("tuneforge", "tuneforge.__main__")) or \
        Path(sys.argv[0] if sys.argv else "").name == "tuneforge"


def reexec_with_allocator(setting: str, *, own_process: bool | None = None) -> None:
    """Restart the current command with train.allocator preloaded (same pid, same arguments); returns when no
    restart is needed, or when this process is not ours to restart (`own_process`; default: launched_as_program).
    Called by `tuneforge train` before anything heavy is imported."""
    if not (launched_as_program() if own_process is None else own_process):
        return
    env = preload_env(setting, dict(os.environ), loaded_allocator())
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts (HEAP_MAX_SIZE / 2 on 64-bit)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
GLIBC_MMAP_THRESHOLD_MAX = 32 << 20
# glibc settings a user may have made through the environment: any one of them set → glibc is left as configured
GLIBC_MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TOP_PAD_",
                    "GLIBC_TUNABLES")
KEPT_NOTE = ("glibc malloc keeping freed memory (train.allocator=auto: blocks up to 32 MiB from the heap, "
             "never trimmed)")
_KEPT: list[bool] = [False]  # set once keep_freed_memory applied its settings in this process


def keep_freed_memory(setting: str, *, own_process: bool | None = None, env: dict | None = None) -> bool:
    """train.allocator=auto with glibc's malloc: serve blocks up to 32 MiB from the heap and never trim it, for
    the rest of this process. Why: glibc's defaults trim the heap top once 2x the (adaptive) mmap threshold is free,
    so each backward pass hands activations back to the kernel and the next step faults them in again, zeroed
    (SmolLM2-135M LoRA, packed 8x512: 185,000-300,000 page faults and 1.2-4.5 s of system time per step; with this:
    4-7 faults and 0.2 s, the same peak RSS). Blocks over 32 MiB stay mmapped, so a freed big block never pins
    memory. Only in the `tuneforge train` process (`own_process`; default launched_as_program): a host that runs
    training in-process (the jobs server, a notebook) should give memory back when the run ends. Returns whether
    the settings were applied."""
    env = os.environ if env is None else env
    if setting != "auto" or not (launched_as_program() if own_process is None else own_process):
        return False
    if loaded_allocator() != "system" or any(k in env for k in GLIBC_MALLOC_ENV):
        return False
    libc = _glibc()
    if libc is None:
        return False
    # the threshold first: setting either one stops glibc adapting the threshold, which would leave it at 128 KiB
    kept = bool(libc.mallopt(M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD_MAX)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))
    _KEPT[0] = _KEPT[0] or kept
    return kept


def _glibc():
    """This process's glibc (ctypes), or None on another C library or platform."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # glibc only: musl has no such symbol
    except (OSError, AttributeError):
        return None
    return libc


def allocator_note(setting: str) -> tuple[str, str]:
    """(allocator in use, why) for the plan and run.json."""
    loaded = loaded_allocator()
    if _KEPT[0] and loaded == "system":
        return loaded, KEPT_NOTE
    choice = choose_allocator(setting)
    if loaded == choice.wanted:
        return loaded, choice.note
    if loaded != "system":
        return loaded, f"{loaded}, preloaded by the environment (LD_PRELOAD)"
    if choice.preload and os.environ.get(MARKER):
        return loaded, f"{choice.wanted} could not be preloaded (the loader ignored LD_PRELOAD): glibc malloc"
    if choice.preload:  # installed, but this process was not started as `tuneforge train`
        return loaded, f"{choice.wanted} is preloaded only by the `tuneforge train` command: glibc malloc here"
    return loaded, choice.note


# ------------------------------------------------------------------------------------------------------- threads

def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-thread siblings counted once), capped by a
    cgroup CPU quota (a container's --cpus)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo / "physical_package_id").read_text().strip() + ":" + (topo / "core_id").read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, min(len(cores), _cgroup_cpus() or len(cores)))


def _cgroup_cpus() -> int | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else max(1, -(-int(quota) // int(period)))


def resolve_threads(setting, env: dict | None = None) -> tuple[int, str]:
    """(threads, why): an explicit train.threads; auto: OMP_NUM_THREADS when set, else physical cores divided by
    the processes of this machine (LOCAL_WORLD_SIZE under torchrun / accelerate)."""
    env = os.environ if env is None else env
    if setting != "auto":
        return int(setting), "train.threads"
    omp = env.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        return int(omp), "OMP_NUM_THREADS"
    world = max(1, int(env.get("LOCAL_WORLD_SIZE", "1") or 1))
    cores = physical_cores()
    why = f"{cores} physical cores" + (f" / {world} processes" if world > 1 else "")
    return max(1, cores // world), why


def set_threads(setting) -> tuple[int, str]:
    """Apply train.threads to torch's intra-op pool; returns (threads, why)."""
    import torch

    threads, why = resolve_threads(setting)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads, why


# ----------------------------------------------------------------------------------------------------- attention

def attention_kernel(setting: str, packing: bool = False, device: str = "cpu") -> str:
    """train.attention resolved: auto → varlen for packed data on the CPU (each packed sample's attention alone: the
    same result as sdpa's block-diagonal mask without the scores it masks away), else sdpa (fused; as exact as eager
    within float rounding, and it never holds the full attention matrix for backward). On a GPU varlen's loop over
    samples costs more than the masked scores (bench/README.md: 0.14x sdpa's packed throughput on an H200)."""
    if setting == "auto":
        return "varlen" if packing and device.split(":")[0] == "cpu" else "sdpa"
    return setting


def use_attention(model, setting: str, packing: bool = False, device: str = "cpu") -> str:
    """Switch a loaded model to train.attention's kernel (it loads with sdpa) → the kernel in use. auto falls back
    to sdpa on a model varlen does not support (sliding-window or chunked layers); an explicit varlen is refused
    there. Methods that need their own attention (longlora, unipelt's prefix) replace it afterwards, as they always
    did."""
    from tuneforge.models import varlen
    from tuneforge.utils.errors import ConfigError

    kernel = attention_kernel(setting, packing, device)
    if kernel == "varlen" and not varlen.supports(model.config):
        if setting == "varlen":
            raise ConfigError("train.attention=varlen needs a model whose layers all attend over the whole "
                              f"sequence; {type(model).__name__} has sliding-window or chunked attention layers",
                              hint="use train.attention=sdpa (or auto, which picks sdpa for this model)")
        kernel = "sdpa"
    impl = varlen.register() if kernel == "varlen" else kernel
    if getattr(model.config, "_attn_implementation", impl) != impl:
        model.set_attn_implementation(impl)
    return kernel


# ---------------------------------------------------------------------------------------------------------- lora

# Sharded training gathers a layer's weights in hooks on the modules that own them (DeepSpeed ZeRO-3: every
# Linear; FSDP: the units it wraps); the fused function reads lora_A/lora_B/base weights without calling their
# modules, so it would see the shards.
SHARDED_MODES = ("fsdp", "deepspeed")


def check_lora_kernel(setting: str, distributed: str) -> None:
    """Refuse train.lora_kernel=fused with sharded training (before any weights load)."""
    from tuneforge.utils.errors import ConfigError

    if setting == "fused" and distributed in SHARDED_MODES:
        raise ConfigError(f"train.lora_kernel=fused reads each layer's whole weights, and train.distributed="
                          f"{distributed} shards them", hint="use train.lora_kernel=auto or peft")


def lora_kernel(setting: str, distributed: str = "none") -> str:
    """train.lora_kernel resolved: peft when asked for or under sharded training, else fused."""
    return "peft" if setting == "peft" or distributed in SHARDED_MODES else "fused"


def use_lora_kernel(model, kernel: str) -> str:
    """Switch a model's PEFT LoRA linear layers to `kernel` (fused or peft, as `lora_kernel` resolves it) → what
    they run: that kernel, or none (no LoRA linear layer). Call after the method is applied."""
    from tuneforge.models import fused_lora

    if not fused_lora.lora_layers(model):
        return "none"
    if kernel == "fused":
        fused_lora.fuse(model)
    else:
        fused_lora.unfuse(model)
    return kernel


# ------------------------------------------------------------------------------------------------------- summary

def runtime_info(cfg, kernels: dict | None = None, device: str = "cpu") -> dict:
    """What run.json records under "runtime" (the values in effect in this process, with their reasons);
    `kernels`: what `use_attention` and `use_lora_kernel` chose once the model was loaded ("attention", "lora");
    `device`: the run's, which auto settings depend on."""
    import torch

    from tuneforge.config.compat import distributed_mode
    from tuneforge.train import distributed as dist

    t, kernels = cfg.train, kernels or {}
    distributed = distributed_mode(cfg, dist.world_size())
    allocator, why = allocator_note(t.allocator)
    threads, threads_why = resolve_threads(t.threads)
    return {"threads": torch.get_num_threads(), "threads_setting": t.threads, "threads_why": threads_why,
            "allocator": allocator, "allocator_setting": t.allocator, "allocator_why": why,
            "malloc_env": {k: os.environ[k] for k in MALLOC_ENV if k in os.environ},
            "compile": t.compile,
            "attention": kernels.get("attention") or attention_kernel(t.attention, cfg.data.packing, device),
            "attention_setting": t.attention,
            "lora_kernel": kernels.get("lora") or lora_kernel(t.lora_kernel, distributed),
            "lora_kernel_setting": t.lora_kernel, "kernels": t.kernels}


def runtime_line(cfg, device: str = "cpu") -> str:
    """One line of the plan: threads, allocator, compile, attention (and train.kernels when set)."""
    info = runtime_info(cfg, device=device)
    extra = f", kernels {info['kernels']}" if info["kernels"] != "none" else ""
    return (f"threads {info['threads']} ({info['threads_why']}), allocator {info['allocator_why']}, "
            f"compile {'on' if info['compile'] else 'off'}, attention {info['attention']}{extra}")
