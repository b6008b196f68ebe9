"""Training stages as plug-ins: one module per stage, registered in STAGES (see stages/base.py for the contract).

Adding a stage: one module with a `Stage` subclass, one row here, one example in examples/, and its tests.
"""

from __future__ import annotations

from tuneforge.config.schema import pick_plugin
from tuneforge.stages.base import Stage, StageParams
from tuneforge.stages.grpo import GrpoStage
from tuneforge.stages.kto import KtoStage
from tuneforge.stages.ppo import PpoStage
from tuneforge.stages.preference import DpoStage, OrpoStage, SimpoStage
from tuneforge.stages.pt import PretrainStage
from tuneforge.stages.rm import RewardStage
from tuneforge.stages.sft import SftStage

STAGES: dict[str, Stage] = {s.name: s for s in (PretrainStage(), SftStage(), RewardStage(), DpoStage(), SimpoStage(),
                                                OrpoStage(), KtoStage(), GrpoStage(), PpoStage())}


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
