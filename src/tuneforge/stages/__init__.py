"""Training stages as plug-ins: one module per stage, registered in STAGES (see stages/base.py for the contract).

Adding a stage: one module with a `Stage` subclass, one row here, one example in examples/, and its tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from tuneforge.config.schema import pick_plugin
from tuneforge.stages.base import Stage, StageParams


class LazyStages(Mapping):
    """Stage name → its `Stage`, the module imported on first use: a stage module may pull in torch, transformers'
    Trainer or TRL, and asking for one stage (e.g. `tuneforge data prepare` answering from the cache) should not
    import them all. Iterating gives the names in table order; `.values()`/`.items()` import every stage."""

    def __init__(self, rows: dict[str, str]):
        self._rows = rows
        self._made: dict[str, Stage] = {}

    def __getitem__(self, name: str) -> Stage:
        if name not in self._made:
            module, cls = self._rows[name].split(":")
            self._made[name] = getattr(importlib.import_module(f"tuneforge.stages.{module}"), cls)()
        return self._made[name]

    def __iter__(self):
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


STAGES: Mapping[str, Stage] = LazyStages({
    "pt": "pt:PretrainStage", "sft": "sft:SftStage", "rm": "rm:RewardStage", "dpo": "preference:DpoStage",
    "simpo": "preference:SimpoStage", "orpo": "preference:OrpoStage", "kto": "kto:KtoStage", "grpo": "grpo:GrpoStage",
    "ppo": "ppo:PpoStage"})


def get_stage(name) -> Stage:
    """The stage registered under `name` (a StageSection or its type); unknown names get "did you mean"."""
    return pick_plugin(STAGES, name, "stage")


def stages_accepting(kind: str) -> list[str]:
    """Names of the stages that train on records of this data kind."""
    return [name for name, s in STAGES.items() if kind in s.accepts]


def stage_and_params(cfg) -> tuple[Stage, StageParams]:
    """The configured stage and its validated parameters (ConfigError naming the `stage.` key otherwise)."""
    stage = get_stage(cfg.stage)
    return stage, stage.params(cfg.stage)


__all__ = ["STAGES", "Stage", "StageParams", "get_stage", "stage_and_params", "stages_accepting"]
