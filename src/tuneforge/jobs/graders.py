"""OpenAI graders of reinforcement fine-tuning jobs → reward functions of the GRPO stage (being written)."""

from __future__ import annotations

from tuneforge.utils.errors import ConfigError


def grader_rewards(method: dict, allow_python: bool) -> list[dict]:
    raise ConfigError("method reinforcement is not supported yet")
