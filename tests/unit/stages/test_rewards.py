"""Reward functions for the RL stages: the built-ins on fixed inputs, and configured rewards failing early."""

from __future__ import annotations

import pytest

from tuneforge.stages.rewards import RewardSpec, build_reward, check_reward, completion_text
from tuneforge.utils.errors import ConfigError

P = [[{"role": "user", "content": "q"}]] * 4


def conv(*texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


def test_label_match_on_conversational_and_plain_completions():
    fn = build_reward(RewardSpec(name="label_match"))
    assert fn(P, conv(" 1\n", "0", "1", "x"), label=["1", "1", None, "X"]) == [1.0, 0.0, None, 1.0]
    assert fn(P[:1], ["Positive"], answer=["positive"]) == [1.0]
    strict = build_reward(RewardSpec(name="label_match", ignore_case=False))
    assert strict(P[:1], ["Positive"], label=["positive"]) == [0.0]


def test_regex_number_match_and_length():
    rx = build_reward(RewardSpec(name="regex", pattern=r"^[01]$", full=True))
    assert rx(P[:3], conv("1", "10", " 0 ")) == [1.0, 0.0, 1.0]
    num = build_reward(RewardSpec(name="number_match"))
    assert num(P, conv("so 1,234 apples", "= 7.5", "none", "12"),
               answer=["#### 1234", "7.50", "3", None]) == [1.0, 1.0, 0.0, None]
    ln = build_reward(RewardSpec(name="length", target=4))
    assert ln(P[:3], conv("abcd", "ab", "abcdefgh")) == [0.0, -0.5, -1.0]
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "ab"


def test_custom_reward_from_a_file(tmp_path):
    f = tmp_path / "my_rewards.py"
    f.write_text("def short(prompts, completions, completion_ids=None, *, limit, **kw):\n"
                 "    return [float(len(c[0]['content']) <= limit) for c in completions]\n")
    fn = build_reward(RewardSpec(name=f"{f}:short", limit=2))
    assert fn(P[:2], conv("ab", "abc")) == [1.0, 0.0]
    with pytest.raises(ConfigError, match="needs limit"):
        check_reward(RewardSpec(name=f"{f}:short"))
    with pytest.raises(ConfigError, match="has no function nope"):
        check_reward(RewardSpec(name=f"{f}:nope"))
    with pytest.raises(ConfigError, match="cannot import"):
        check_reward(RewardSpec(name="no_such_module_xyz:fn"))


def test_bad_builtin_arguments_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match="reward regex needs pattern"):
        check_reward(RewardSpec(name="regex"))
    with pytest.raises(ConfigError, match="did you mean 'pattern'"):
        check_reward(RewardSpec(name="regex", patern="x"))
    with pytest.raises(ConfigError, match="neither a built-in"):
        check_reward(RewardSpec(name="label_mtch"))
    with pytest.raises(ConfigError, match="needs `model:`"):
        check_reward(RewardSpec(name="rm"))
    with pytest.raises(ConfigError, match="no run folder"):
        check_reward(RewardSpec(name="rm", model=str(tmp_path / "missing")))
