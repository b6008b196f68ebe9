"""OpenAI graders as a GRPO reward (tuneforge.stages.graders)."""

from __future__ import annotations

import pytest

from tuneforge.stages.graders import check_grader, grader, similarity
from tuneforge.stages.rewards import RewardSpec, build_reward
from tuneforge.utils.errors import ConfigError

EQ = {"type": "string_check", "name": "eq", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
      "operation": "eq"}


def test_string_check_operations_and_templates():
    for op, want in (("eq", [1.0, 0.0, 0.0]), ("ne", [0.0, 1.0, 1.0]), ("like", [1.0, 1.0, 0.0]),
                     ("ilike", [1.0, 1.0, 1.0])):
        got = grader(None, ["Blue", "Blue sky", "BLUE"], grader={**EQ, "operation": op}, answer=["Blue"] * 3)
        assert got == want, op
    nested = {**EQ, "input": "{{sample.output_json.color}}", "reference": "{{item.meta.color}}"}
    assert grader(None, ['{"color": "red"}', "not json"], grader=nested,
                  meta=[{"color": "red"}, {"color": "red"}]) == [1.0, None]  # a field it cannot read: None
    assert grader(None, ["Blue"], grader=EQ, other=["x"]) == [None]


def test_text_similarity_metrics_are_scores_from_0_to_1():
    for metric in ("fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_l"):
        same, other = similarity(metric, "the sky is blue", "the sky is blue"), similarity(metric, "xyz", "qrs")
        assert same == pytest.approx(1.0) and other == pytest.approx(0.0), metric
    assert 0 < similarity("rouge_l", "the sky is very blue", "the sky is blue") < 1


def test_multi_combines_named_graders_with_a_safe_formula():
    multi = {"type": "multi", "name": "m", "graders": {"a": EQ, "b": {**EQ, "operation": "ilike"}},
             "calculate_output": "max(a, 0.25) + b / 2"}
    assert grader(None, ["Blue", "blue!"], grader=multi, answer=["Blue", "Blue"]) == [1.5, 0.75]
    for formula in ("__import__('os').system('x')", "a.real", "c + 1", "'a'"):
        with pytest.raises(ConfigError, match="calculate_output"):
            check_grader({**multi, "calculate_output": formula})


def test_python_graders_run_only_when_allowed_and_unknown_types_are_refused():
    code = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return len(sample['output_text'])"}
    with pytest.raises(ConfigError, match="switched off"):
        check_grader(code)
    assert grader(None, ["abc"], grader=code, allow_python=True) == [3.0]
    for bad, why in (({**EQ, "type": "score_model"}, "judge"), ({**EQ, "operation": "regex"}, "operation"),
                     ({"type": "text_similarity", "input": "", "reference": "", "evaluation_metric": "cosine"},
                      "not supported"), ({"type": "string_check"}, "needs input")):
        with pytest.raises(ConfigError) as err:
            check_grader(bad)
        assert why in str(err.value) + (err.value.hint or ""), bad


def test_the_grader_reward_is_built_and_checked_like_the_other_rewards():
    fn = build_reward(RewardSpec(name="grader", grader=EQ))
    assert fn(None, ["Blue", "Red"], answer=["Blue", "Blue"]) == [1.0, 0.0]
    with pytest.raises(ConfigError, match="needs grader"):
        build_reward(RewardSpec(name="grader"))
    with pytest.raises(ConfigError, match="switched off"):
        build_reward(RewardSpec(name="grader", grader={"type": "python", "source": "x"}))
