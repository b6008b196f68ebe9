"""Which run settings a stage supports, read from the stage's own capability attributes (stages/base.py), so the
check, the docs table and the UI agree. Every problem is a ConfigError naming the key and the fix."""

from __future__ import annotations

from tuneforge.stages.base import Stage
from tuneforge.utils.errors import ConfigError


def stage_problems(cfg, stage: Stage) -> list[tuple[str, str]]:
    """(problem, fix) pairs for settings the configured stage cannot honour."""
    found = []
    if cfg.data.packing and not stage.packable:
        found.append((f"data.packing=true, but stage {stage.name} trains on {'/'.join(stage.accepts)} rows, "
                      f"which are not packed", "set data.packing=false"))
    if not stage.generative and cfg.eval.classification is not None:
        found.append((f"eval.classification needs a model that generates; stage {stage.name} trains a "
                      f"{stage.description.split(':')[0]}", "remove eval.classification"))
    if not stage.generative and cfg.eval.preview_prompts:
        found.append((f"eval.preview_prompts needs a model that generates; stage {stage.name} does not",
                      "set eval.preview_prompts=[]"))
    return found


def check_stage_compat(cfg, stage: Stage) -> None:
    problems = stage_problems(cfg, stage)
    if problems:
        raise ConfigError("; ".join(p for p, _ in problems), hint="; ".join(f for _, f in problems))
