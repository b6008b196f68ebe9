"""Training stages as plug-ins: one module per stage, registered in STAGES (see stages/base.py for the contract).

Adding a stage: one module with a `Stage` subclass, one row here, one example in examples/, and its tests.
"""

from __future__ import annotations

import difflib

from tuneforge.stages.base import Stage, StageParams
from tuneforge.stages.grpo import GrpoStage
from tuneforge.stages.kto import KtoStage
from tuneforge.stages.ppo import PpoStage
from tuneforge.stages.preference import DpoStage, OrpoStage, SimpoStage
from tuneforge.stages.pt import PretrainStage
from tuneforge.stages.rm import RewardStage
from tuneforge.stages.sft import SftStage
from tuneforge.utils.errors import ConfigError

STAGES: dict[str, Stage] = {s.name: s for s in (PretrainStage(), SftStage(), RewardStage(), DpoStage(), SimpoStage(),
                                                OrpoStage(), KtoStage(), GrpoStage(), PpoStage())}


def get_stage(name) -> Stage:
    """The stage registered under `name` (a StageSection or its type); unknown names get "did you mean"."""
    key = getattr(name, "type", name)
    if key not in STAGES:
        close = difflib.get_close_matches(str(key), list(STAGES), n=1, cutoff=0.5)
        guess = f" — did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"stage: unknown stage '{key}'{guess}", hint=f"choose one of: {', '.join(STAGES)}")
    return STAGES[key]


def stages_accepting(kind: str) -> list[str]:
    """Names of the stages that train on records of this data kind."""
    return [name for name, s in STAGES.items() if kind in s.accepts]


def stage_and_params(cfg) -> tuple[Stage, StageParams]:
    """The configured stage and its validated parameters (ConfigError naming the `stage.` key otherwise)."""
    stage = get_stage(cfg.stage)
    return stage, stage.params(cfg.stage)


__all__ = ["STAGES", "Stage", "StageParams", "get_stage", "stage_and_params", "stages_accepting"]
