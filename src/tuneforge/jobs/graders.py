"""A reinforcement job's `grader` → the GRPO stage's rewards (tuneforge.stages.graders runs OpenAI's graders).

The grader is checked when the job is created: an unsupported type or metric, a bad formula, or a `python` grader
on a server that does not allow running clients' code is the request's 400, not a failed job later.
"""

from __future__ import annotations

from tuneforge.stages.graders import check_grader
from tuneforge.utils.errors import ConfigError

# Reinforcement hyperparameters OpenAI has and tuneforge does not act on: refused unless "auto".
_UNUSED = ("compute_multiplier", "eval_interval", "eval_samples", "reasoning_effort")


def grader_rewards(method: dict, allow_python: bool) -> list[dict]:
    params = method.get("reinforcement") or {}
    grader = params.get("grader")
    if grader is None:
        raise ConfigError("method.reinforcement.grader is required: it scores the model's answers")
    check_grader(grader, allow_python, "method.reinforcement.grader")
    hp = params.get("hyperparameters") or {}
    unused = [k for k in _UNUSED if hp.get(k) not in (None, "auto", "default")]
    if unused:
        raise ConfigError(f"method.reinforcement.hyperparameters.{unused[0]} is not supported by tuneforge",
                          hint="leave it out (or \"auto\"); GRPO settings can be given through the tuneforge "
                               "extension, e.g. {\"stage.num_generations\": 8}")
    return [{"name": "grader", "grader": grader, "allow_python": allow_python}]
