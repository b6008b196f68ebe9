"""Which combinations of stage × method × quantization × device × launch mode work, as data.

One table of rules (`RULES`): a rule names the values it applies to on some axes (every other value of the other
axes matches) and says why that combination cannot run and what to use instead. Validation (`problems`), the
`tuneforge methods` matrix, the README matrix (generated from `matrix_markdown`, tested to be in sync) and the web UI
all read this table; nothing else decides compatibility. Stage × data-setting checks that follow from a stage's own
attributes (packing, generation) live with the stages (tuneforge.stages.compat).

Axes and their values for a run: stage (pt, sft, rm, dpo, ...), method (full, lora, ...), quantization (none,
4bit, 8bit), device (cpu, cuda, mps), distributed (none, ddp, fsdp, deepspeed: train.distributed with auto resolved
by the number of launched processes), packing (on, off), kernels (train.kernels: none, liger). Whether the launch
matches train.distributed (several processes for ddp/fsdp/deepspeed, deepspeed installed) is checked here too, before
the table.
"""

from __future__ import annotations

from dataclasses import dataclass

AXES = ("stage", "method", "quantization", "device", "distributed", "packing", "kernels")

DISTRIBUTED = ("none", "ddp", "fsdp", "deepspeed")  # train.distributed once auto is resolved
SHARDED = ("fsdp", "deepspeed")  # each process holds a shard of the weights / gradients / optimizer state
PROMPT_METHODS = ("prompt", "ptuning", "prefix", "ptuning_v2")  # virtual tokens instead of changed weights
SEQUENCE_STAGES = ("pt", "sft")  # train on one sequence per row with the model's own loss


@dataclass(frozen=True)
class Rule:
    """`when`: axis → the values this rule applies to. `reason`: why it cannot run. `instead`: the closest setting
    that does (a config change the user can make)."""

    when: dict
    reason: str
    instead: str

    def matches(self, run: dict) -> bool:
        return all(str(run.get(axis)) in values for axis, values in self.when.items())


RULES: tuple[Rule, ...] = (
    Rule({"method": PROMPT_METHODS, "stage": ("rm", "dpo", "simpo", "orpo", "kto", "grpo", "ppo")},
         "the preference, reward and RL stages score answers token by token from the model's hidden states, which "
         "virtual tokens shift (prompt, ptuning) or which never see them (prefix, ptuning_v2)",
         "method.type=lora (or ia3 for a similarly small adapter)"),
    Rule({"method": PROMPT_METHODS, "packing": ("on",)},
         "virtual tokens go once before a whole packed sequence, so every packed row after the first would be "
         "trained without them", "data.packing=false"),
    Rule({"method": ("qlora",), "stage": ("rm",)},
         "the reward model's score head is built from the causal LM's unquantized weights",
         "method.type=lora (the rm adapter is small either way)"),
    Rule({"method": ("adapter", "unipelt"), "stage": ("rm",)},
         "a reward model trains a new score head, and these methods freeze every weight but their own modules, so "
         "the head would stay random", "method.type=lora (PEFT trains the score head beside the adapter)"),
    Rule({"method": ("longlora",), "stage": ("rm", "dpo", "simpo", "orpo", "kto", "grpo", "ppo")},
         "LongLoRA's shifted sparse attention approximates full attention for next-token training on long "
         "sequences; a score head, preference margins or RL ratios learned under it would be used with full "
         "attention", "method longlora in stage pt or sft, then this stage on its model (model.name=<that run>) "
         "with method lora"),
    Rule({"method": ("mixture_of_depths",), "stage": ("dpo", "kto")},
         "the reference log-probs come from a frozen copy in eval mode, which routes tokens by the learned "
         "threshold, while the policy routes each sequence's top-k in training: their log-ratio would measure the "
         "routing difference, not what training changed", "stage=simpo or orpo (reference-free), or method.type=full"),
    Rule({"method": ("mixture_of_depths",), "stage": ("grpo", "ppo")},
         "completions are sampled with causal threshold routing but scored for the loss with training's top-k "
         "routing over the whole completion, so the gradient would be for another policy than the one that sampled",
         "method.type=full for RL (mixture_of_depths trains with pt, sft, simpo, orpo or rm)"),
    Rule({"method": ("qlora",), "device": ("mps",)},
         "bitsandbytes quantizes on CUDA and CPU, not on Apple MPS", "model.device=cpu, or method.type=lora"),
    Rule({"method": ("adalora",), "distributed": ("ddp", *SHARDED)},
         "AdaLoRA prunes ranks from each process's own gradients (under fsdp / deepspeed from a shard of them), so "
         "processes could prune differently", "method.type=lora, or train AdaLoRA in one process"),
    Rule({"method": ("galore", "apollo"), "distributed": SHARDED},
         "GaLore and APOLLO project each weight matrix's whole gradient onto a low-rank basis (an SVD or a random "
         "projection of the full matrix), but FSDP and DeepSpeed ZeRO give each process only a shard of it",
         "train.distributed=ddp (each process holds the whole model), or method.type=full with "
         "train.distributed=fsdp"),
    Rule({"method": ("qlora",), "distributed": SHARDED},
         "bitsandbytes stores the quantized base as integer tensors, which FSDP2 does not shard (accelerate leaves "
         "them whole on every GPU) and ZeRO-3 cannot partition; sharding a 4-bit base needs bnb_4bit_quant_storage "
         "set to the compute dtype, which tuneforge does not set",
         "train.distributed=ddp (each GPU holds the 4-bit base, a quarter of its 16-bit size), or method.type=lora "
         "with train.distributed=fsdp"),
    Rule({"distributed": ("fsdp",), "device": ("cpu", "mps")},
         "accelerate turns FSDP on for GPUs only (CUDA, XPU, NPU, ...): processes on CPU would silently train as "
         "DDP, each holding the whole model", "train.distributed=ddp on CPU (gloo), or run on CUDA GPUs"),
    Rule({"kernels": ("liger",), "device": ("cpu", "mps")},
         "Liger Kernel's RMSNorm, RoPE and SwiGLU are Triton programs for GPUs", "train.kernels=none, or run on CUDA"),
    Rule({"distributed": ("deepspeed",), "device": ("cpu", "mps")},
         "DeepSpeed ZeRO trains on CUDA GPUs", "train.distributed=ddp on CPU (gloo), or run on CUDA GPUs"),
)


def problems(run: dict) -> list[tuple[str, str]]:
    """(reason, instead) for every rule the run's coordinates (axis → value) match."""
    return [(r.reason, r.instead) for r in RULES if r.matches(run)]


def supported(stage: str, method: str, **axes) -> bool:
    """True when no rule forbids `method` with `stage` (other axes: their common values unless given)."""
    run = {"quantization": "none", "device": "cpu", "distributed": "none", "packing": "off", "kernels": "none",
           **axes, "stage": stage, "method": method}
    return not problems(run)


def matrix_markdown(stages: list[str], methods: list[str]) -> str:
    """The stage × method table of the README: ✓ where the combination runs, ✗ (with the rule's reason) otherwise."""
    lines = ["| stage × method | " + " | ".join(f"`{m}`" for m in methods) + " |",
             "|---|" + "---|" * len(methods)]
    for s in stages:
        lines.append(f"| `{s}` | " + " | ".join("✓" if supported(s, m) else "✗" for m in methods) + " |")
    notes = [f"- {', '.join(r.when.get('method', ()))}{_stages(r)}: {r.reason}; use {r.instead}."
             for r in RULES if "stage" in r.when]
    return "\n".join(lines + [""] + notes)


def _stages(rule: Rule) -> str:
    return f" with {', '.join(rule.when['stage'])}" if "stage" in rule.when else ""


def distributed_mode(cfg, world_size: int = 1) -> str:
    """train.distributed with auto resolved: ddp when launched as several processes, none in one."""
    setting = cfg.train.distributed
    if setting == "auto":
        return "ddp" if world_size > 1 else "none"
    return setting


def run_coordinates(cfg, *, device: str = "cpu", world_size: int = 1) -> dict:
    """A RunConfig's position on every axis."""
    bits = cfg.method.params.get("bits", 4) if cfg.method.type == "qlora" else None
    return {"stage": cfg.stage.type, "method": cfg.method.type, "quantization": f"{bits}bit" if bits else "none",
            "device": device.split(":")[0], "distributed": distributed_mode(cfg, world_size),
            "packing": "on" if cfg.data.packing else "off", "kernels": cfg.train.kernels}


LAUNCH = "torchrun --nproc_per_node 2 -m tuneforge train CONFIG"  # 2: the number of processes (GPUs), CONFIG yours


def check_launch(cfg, world_size: int) -> None:
    """ConfigError when train.distributed does not match how the run was started: ddp / fsdp / deepspeed in a single
    process (it must be launched as several, and the error says how), none under a launcher, or deepspeed not
    installed."""
    import importlib.util

    from tuneforge.utils.errors import ConfigError

    setting, mode = cfg.train.distributed, distributed_mode(cfg, world_size)
    if mode != "none" and world_size <= 1:
        raise ConfigError(f"train.distributed={setting} needs several processes, but this run is a single one",
                          hint=f"launch one process per GPU: `{LAUNCH}` (or `accelerate launch --num_processes 2 -m "
                               f"tuneforge train CONFIG`), or set train.distributed=none")
    if mode == "none" and world_size > 1:
        raise ConfigError(f"train.distributed=none, but this run was launched as {world_size} processes",
                          hint="run `tuneforge train CONFIG` without a launcher, or set train.distributed=ddp")
    if mode == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("train.distributed=deepspeed needs the deepspeed package, which is not installed",
                          hint="pip install deepspeed (on a machine with CUDA GPUs), or set train.distributed=ddp "
                               "or fsdp")


def check(cfg, *, device: str = "cpu", world_size: int = 1) -> None:
    """ConfigError when the table forbids this run's combination, with the reasons and what to use instead, or when
    the launch does not fit train.distributed (`check_launch`). `world_size`: the processes this run starts with."""
    from tuneforge.utils.errors import ConfigError

    run = run_coordinates(cfg, device=device, world_size=world_size)
    found = [r for r in RULES if r.matches(run)]
    if found:
        raise ConfigError("; ".join(f"{_combination(r, run)} cannot run: {r.reason}" for r in found),
                          hint="; ".join(r.instead for r in found) + " (`tuneforge methods` shows what works)")
    check_launch(cfg, world_size)


def _combination(rule: Rule, run: dict) -> str:
    """The run's values on the rule's axes, method first: "method adalora with distributed ddp"."""
    axes = sorted(rule.when, key=("method", "stage", "distributed", "quantization", "kernels", "device",
                                  "packing").index)
    return " with ".join(f"{axis} {run[axis]}" for axis in axes)
