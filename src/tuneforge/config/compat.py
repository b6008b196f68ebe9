"""Which combinations of stage × method × quantization × device × launch mode work, as data.

One table of rules (`RULES`): a rule names the values it applies to on some axes (every other value of the other
axes matches) and says why that combination cannot run and what to use instead. Validation (`problems`), the
`tuneforge methods` matrix, the README matrix (generated from `matrix_markdown`, tested to be in sync) and the web UI
all read this table; nothing else decides compatibility. Stage × data-setting checks that follow from a stage's own
attributes (packing, generation) live with the stages (tuneforge.stages.compat).

Axes and their values for a run: stage (pt, sft, rm, dpo, ...), method (full, lora, ...), quantization (none for
now), device (cpu, cuda, mps), distributed (none, ddp), packing (on, off).
"""

from __future__ import annotations

from dataclasses import dataclass

AXES = ("stage", "method", "quantization", "device", "distributed", "packing")

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
    Rule({"method": ("qlora",), "device": ("mps",)},
         "bitsandbytes quantizes on CUDA and CPU, not on Apple MPS", "model.device=cpu, or method.type=lora"),
    Rule({"method": ("adalora",), "distributed": ("ddp",)},
         "AdaLoRA prunes ranks from each process's own gradients, so processes could prune differently",
         "method.type=lora, or train AdaLoRA in one process"),
)


def problems(run: dict) -> list[tuple[str, str]]:
    """(reason, instead) for every rule the run's coordinates (axis → value) match."""
    return [(r.reason, r.instead) for r in RULES if r.matches(run)]


def supported(stage: str, method: str, **axes) -> bool:
    """True when no rule forbids `method` with `stage` (other axes: their common values unless given)."""
    run = {"quantization": "none", "device": "cpu", "distributed": "none", "packing": "off", **axes,
           "stage": stage, "method": method}
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


def run_coordinates(cfg, *, device: str = "cpu", world_size: int = 1) -> dict:
    """A RunConfig's position on every axis."""
    bits = cfg.method.params.get("bits", 4) if cfg.method.type == "qlora" else None
    return {"stage": cfg.stage.type, "method": cfg.method.type, "quantization": f"{bits}bit" if bits else "none",
            "device": device.split(":")[0], "distributed": "ddp" if world_size > 1 else "none",
            "packing": "on" if cfg.data.packing else "off"}


def check(cfg, *, device: str = "cpu", world_size: int = 1) -> None:
    """ConfigError when the table forbids this run's combination, with the reasons and what to use instead."""
    from tuneforge.utils.errors import ConfigError

    found = problems(run_coordinates(cfg, device=device, world_size=world_size))
    if found:
        combo = f"method {cfg.method.type} with stage {cfg.stage.type}"
        raise ConfigError(f"{combo} cannot run: " + "; ".join(reason for reason, _ in found),
                          hint="; ".join(instead for _, instead in found) + " (`tuneforge methods` shows what works)")
