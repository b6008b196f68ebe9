"""GRPO (and RLOO): G sampled completions per prompt, scored by reward functions (stages/rewards.py), each
completion's advantage taken against the other completions of its prompt. Wraps TRL's stable GRPOTrainer
(`advantage: group`) and RLOOTrainer (`advantage: rloo`, the leave-one-out baseline), configured from tuneforge's
config and checked before anything loads.

    stage: {type: grpo, num_generations: 4, rewards: [{name: label_match}, {name: regex, pattern: "^[01]$"}]}

Data: prompts (a conversation ending on a user turn), or an SFT dataset whose answer becomes the `label` column
the reward functions receive, so any classification dataset is RL data with `label_match`. Other columns of the
row reach the reward functions too. `train.batch_size` counts completions: a step holds batch_size /
num_generations prompts, so the global batch must be a multiple of num_generations.

Logged by TRL at every logging step: reward (and per reward function), reward_std, frac_reward_zero_std (groups
that teach nothing), kl (beta > 0), clip_ratio/*, completions/mean_length and friends; plus what reward functions
report through `metrics()` (e.g. a judge's unparsable answers). Evaluation generates for the validation prompts and
logs eval_reward.
"""

from __future__ import annotations

import copy
from typing import Literal

from pydantic import Field, model_validator

from tuneforge.stages.base import Prepared, Stage, StageParams
from tuneforge.stages.prompts import prompt_rows
from tuneforge.stages.rewards import RewardSpec, build_reward, check_reward, reward_metrics
from tuneforge.utils.errors import ConfigError, DataError

_GROUP_ONLY = ("loss", "scale_rewards", "importance_sampling")


class GrpoParams(StageParams):
    rewards: list[RewardSpec] = Field(min_length=1, description="reward functions with weights, e.g. "
                                                               "[{name: label_match}, {name: regex, pattern: ...}]")
    num_generations: int = Field(4, ge=2, description="completions sampled per prompt (G)")
    max_completion_length: int = Field(32, ge=1, description="longest completion, in tokens")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the completions")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling of the completions")
    beta: float = Field(0.0, ge=0, description="KL weight against the reference model (0: no reference pass)")
    advantage: Literal["group", "rloo"] = Field("group", description="group: reward minus the group mean (GRPO); "
                                                                     "rloo: minus the mean of the other completions")
    loss: Literal["grpo", "dr_grpo", "dapo"] = Field("dapo", description="how token losses are averaged (group)")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="divide advantages by the "
                                                                                  "reward std of the group/batch")
    importance_sampling: Literal["token", "sequence"] = Field("token", description="token ratios, or one ratio "
                                                                                   "per sequence (GSPO)")
    epsilon: float = Field(0.2, gt=0, description="clipping ε of the policy ratio (low side)")
    epsilon_high: float | None = Field(None, gt=0, description="clipping ε on the high side (DAPO); default ε")
    num_iterations: int = Field(1, ge=1, description="optimisation passes per generated batch (μ)")
    mask_truncated: bool = Field(False, description="leave completions cut at max_completion_length out of the loss")

    @model_validator(mode="after")
    def _group_options_need_group(self):
        if self.advantage == "rloo":
            set_here = [k for k in _GROUP_ONLY if k in self.model_fields_set]
            if set_here:
                raise ValueError(f"{', '.join(set_here)} applies to advantage: group, not rloo")
        return self


class GrpoStage(Stage):
    name = "grpo"
    description = "GRPO / RLOO: G sampled completions per prompt, scored by reward functions, group-relative " \
                  "advantages"
    accepts = ("chat", "prompt")
    Params = GrpoParams
    metrics = ("eval_reward", "eval_loss")
    auto_metric = "eval_reward"
    lr_scale = 0.1

    def check_plan(self, cfg, params: GrpoParams, batch_size: int, world_size: int) -> None:
        """Whole groups per step, and rewards that can be built, before the model loads."""
        global_batch = batch_size * cfg.train.grad_accum * world_size
        if global_batch % params.num_generations:
            raise ConfigError(f"train.batch_size={batch_size} × grad_accum {cfg.train.grad_accum} × {world_size} "
                              f"process(es) = {global_batch} completions per step is not a multiple of "
                              f"stage.num_generations={params.num_generations}",
                              hint=f"set train.batch_size to a multiple of {params.num_generations}, or change "
                                   f"stage.num_generations")
        for spec in params.rewards:
            check_reward(spec)

    def sequences_per_item(self, params: GrpoParams) -> int:
        return params.num_generations

    def prepare(self, records, tok, data_cfg, params: GrpoParams) -> Prepared:
        rows = list(_fitting_prompts(records, tok, data_cfg, params))
        items = [{**rec.extra, "prompt": prompt, "label": label} for rec, prompt, label, _ in rows]
        lengths = [len(ids) for *_, ids in rows]
        stats = {**_row_counts(len(records), len(items)), "tokens": sum(lengths), "trained_tokens": 0,
                 "longest_prompt": max(lengths, default=0)}
        return Prepared(items, stats)

    def render_for_preview(self, records, tok, data_cfg, params: GrpoParams):
        from tuneforge.data.render import IGNORE, Rendered

        shown = [Rendered(ids, [IGNORE] * len(ids)) for *_, ids in _fitting_prompts(records, tok, data_cfg, params)]
        return shown, _row_counts(len(records), len(shown))

    def collators(self, tok, data_cfg, params):
        return None, None

    def build(self, *, model, tok, train_items, val_items, args, callbacks, counter, params: GrpoParams, data_cfg,
              out_dir):
        from datasets import Dataset
        from transformers.trainer_callback import PrinterCallback

        trainer_cls, config_cls = _trl_classes(params.advantage)
        rewards = [build_reward(r) for r in params.rewards]
        own_reference = params.beta > 0 and not hasattr(model, "disable_adapter")
        # full/freeze with a KL term: the reference is a frozen copy of the starting policy (an earlier run's model
        # included). TRL would reload it from the base model's path instead, so it is built without one and given it.
        reference = copy.deepcopy(model).eval().requires_grad_(False) if own_reference else None
        config = _trl_config(config_cls, args, params.model_copy(update={"beta": 0.0}) if own_reference else params)
        trainer = trainer_cls(model=model, reward_funcs=rewards, args=config,
                              train_dataset=Dataset.from_list(train_items),
                              eval_dataset=Dataset.from_list(val_items) if val_items else None,
                              processing_class=tok, callbacks=callbacks)
        if reference is not None:
            from trl.trainer import add_fused_lm_head

            add_fused_lm_head(reference, temperature=params.temperature)  # as TRL prepares its own reference
            trainer.beta = params.beta
            trainer.ref_model = trainer.accelerator.prepare_model(reference, evaluation_mode=True)
        trainer.token_counter = counter
        trainer.remove_callback(PrinterCallback)  # our ProgressCallback/MetricsCallback show and store the logs
        return trainer


def _fitting_prompts(records, tok, data_cfg, params: GrpoParams):
    """prompt_rows, refusing (file:line) a prompt that leaves no room for max_completion_length within cutoff_len."""
    for rec, prompt, label, ids in prompt_rows(records, tok):
        if len(ids) + params.max_completion_length > data_cfg.cutoff_len:
            file, line = rec.location()
            raise DataError(f"the prompt has {len(ids)} tokens, which with stage.max_completion_length="
                            f"{params.max_completion_length} does not fit data.cutoff_len={data_cfg.cutoff_len}",
                            file=file, line=line, field="prompt",
                            hint="raise data.cutoff_len, lower stage.max_completion_length, or shorten the row")
        yield rec, prompt, label, ids


def _row_counts(rows: int, kept: int) -> dict:
    """The RenderStats counts of prompt data: every row kept whole, nothing cut or dropped."""
    return {"rows": rows, "kept": kept, "truncated": 0, "answer_cut": 0, "dropped_long_answer": 0,
            "dropped_no_target": 0}


def _trl_config(config_cls, args, params: GrpoParams):
    """TRL's config: our TrainingArguments (schedule, precision, checkpoints) plus the stage's parameters."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    base = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init and f.name in names}
    own = {"num_generations": params.num_generations, "max_completion_length": params.max_completion_length,
           "temperature": params.temperature, "top_p": params.top_p, "beta": params.beta,
           "epsilon": params.epsilon, "epsilon_high": params.epsilon_high, "num_iterations": params.num_iterations,
           "reward_weights": [r.weight for r in params.rewards], "mask_truncated_completions": params.mask_truncated,
           "remove_unused_columns": False}
    if params.advantage == "group":
        own.update(loss_type=params.loss, scale_rewards=params.scale_rewards,
                   importance_sampling_level=params.importance_sampling)
    return config_cls(**{**base, **own})


def _trl_classes(advantage: str):
    """(Trainer, Config) of TRL for the advantage estimator, the Trainer extended with tuneforge's logging."""
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    base, config = (GRPOTrainer, GRPOConfig) if advantage == "group" else (RLOOTrainer, RLOOConfig)
    return type(f"Tuneforge{base.__name__}", (_RewardLogging, base), {}), config


class _RewardLogging:
    """Mixed into TRL's trainer: the reward functions' own reports (reward_metrics) join every training log, and
    the generated tokens TRL counts feed tuneforge's throughput counter."""

    token_counter = None

    def log(self, logs, *args, **kwargs):
        if "loss" in logs:
            logs = {**logs, **reward_metrics(self.reward_funcs)}
        return super().log(logs, *args, **kwargs)

    def training_step(self, *args, **kwargs):
        loss = super().training_step(*args, **kwargs)
        if self.token_counter is not None:  # prompt + completion tokens, as TRL counts them (no padding)
            seen = int(self.state.num_input_tokens_seen)
            self.token_counter.real_tokens = self.token_counter.padded_tokens = seen
        return loss
