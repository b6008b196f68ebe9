"""PPO (Schulman et al. 2017, as applied to language models by Ziegler et al. 2019 and InstructGPT): our own
implementation on the Hugging Face Trainer (TRL no longer ships a PPO trainer).

Each training step takes a batch of prompts and
  1. samples one completion per prompt from the policy (temperature, top_p, up to max_completion_length tokens,
     stopping at the chat template's end of turn);
  2. scores it with the configured rewards (`rewards:`, stages/rewards.py: an `rm` run, built-in or custom
     functions, a judge): their weighted sum, a None ("not applicable") counting as 0 for that reward; minus
     `missing_eos_penalty` when the completion never reached its end of turn;
  3. reads the log-probs of the completion tokens under the rollout policy and the frozen reference, and the value
     of every prefix; the per-token reward is −kl_coef × (log π − log π_ref), plus the score at the last token;
  4. estimates advantages by GAE (gamma, lam; whitened over the batch) and returns;
  5. returns the clipped policy loss + vf_coef × the clipped value loss for the Trainer's usual backward and
     optimizer step. With ppo_epochs > 1 a rollout is reused for that many optimizer steps (the prompt batches that
     arrive meanwhile are skipped, so an epoch rolls out 1/ppo_epochs of the prompts).
The pure arithmetic is in stages/ppo_math.py.

The reference is the policy with its LoRA adapter disabled, or (full / freeze) a frozen copy made before the first
step. The value head is one linear layer on the policy's last hidden state (a shared backbone), trained by the same
optimizer; it starts at zero (`value_init: policy`) or as a copy of the score head of the `rm` reward's run
(`value_init: rm`), which assumes the rm shares the policy's base model. It is saved in every checkpoint (with the
adaptive KL coefficient), so a resumed run continues with it, and is left out of the final model. Dropout is switched
off in the policy so that the first update starts from ratio 1 and KL 0.

Log-probs are taken at the sampling temperature (logits / temperature), so the policy ratio and the KL measure the
distribution the completions were sampled from (top_p is not modelled).

Logged on train (averaged over each logging interval): reward (the score), reward/<name> (each reward's mean where
it applies) and reward/<name>/none (the share of completions it did not apply to), kl (summed over a completion's
tokens), kl_coef, non_score_reward, entropy, clipfrac (policy), policy_loss, value_loss, value_clipfrac, approx_kl,
completion_length, missing_eos. Evaluation answers the validation prompts greedily and logs eval_reward, eval_kl,
eval_completion_length, eval_missing_eos (and eval_reward/<name>); train.load_best: auto keeps the checkpoint with
the best eval_reward. With ppo_epochs > 1, a run resumed in the middle of a round starts a fresh rollout.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import json
import numbers
import os
from typing import Literal

import torch
from pydantic import Field, model_validator

from tuneforge.data.records import Record
from tuneforge.data.render import IGNORE, RenderStats, Rendered
from tuneforge.data.templates import single_token_id, template_stop_strings, template_stop_token_ids
from tuneforge.stages.base import Prepared, Stage, StageParams
from tuneforge.stages.ppo_math import (AdaptiveKLController, FixedKLController, entropy_from_logits, gae_advantages,
                                       kl_penalty_rewards, masked_mean, masked_whiten, policy_loss, token_logprobs,
                                       value_loss)
from tuneforge.stages.prompts import prompt_rows
from tuneforge.stages.rewards import RewardSpec, build_reward, check_reward, reward_metrics
from tuneforge.stages.trainer import BatchMetricsTrainer, ListDataset
from tuneforge.utils.errors import ConfigError, DataError

VALUE_HEAD = "ppo_value_head"  # the value head's attribute on the policy while training
VALUE_HEAD_FILE = "ppo_value_head.safetensors"
STATE_FILE = "ppo_state.json"
REWARD_ARGS = ("prompts", "completions", "completion_ids")  # dataset columns never passed under these names


class PpoParams(StageParams):
    rewards: list[RewardSpec] = Field([], description="what scores a completion: [{name: label_match}, {name: rm, "
                                                      "model: runs/my-rm}, {name: my.py:fn, weight: 0.5}] — the "
                                                      "weighted sum; None (not applicable) counts as 0")
    max_completion_length: int = Field(32, ge=1, description="most tokens sampled per completion; prompt + this must "
                                                             "fit data.cutoff_len")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the rollouts")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling of the rollouts (1 = off)")
    kl_coef: float = Field(0.05, ge=0, description="weight β of the per-token KL penalty to the reference (the "
                                                   "start value when kl_target is set)")
    kl_target: float | None = Field(None, gt=0, description="adapt kl_coef towards this KL per completion; "
                                                            "null = a fixed kl_coef")
    kl_horizon: int = Field(10000, ge=1, description="adaptive KL: samples over which kl_coef may change by 20%")
    gamma: float = Field(1.0, ge=0, le=1, description="discount of later token rewards (GAE γ)")
    lam: float = Field(0.95, ge=0, le=1, description="GAE λ: bias/variance trade-off of the advantages")
    cliprange: float = Field(0.2, gt=0, description="policy ratio clip ε")
    cliprange_value: float = Field(0.2, gt=0, description="how far a value may move from its rollout value")
    vf_coef: float = Field(0.1, ge=0, description="weight of the value loss beside the policy loss")
    ppo_epochs: int = Field(1, ge=1, description="optimizer steps on each rollout (the prompt batches that arrive "
                                                 "meanwhile are skipped)")
    whiten_rewards: bool = Field(False, description="scale the per-token rewards to unit variance before GAE")
    missing_eos_penalty: float | None = Field(None, ge=0, description="subtract this from the score of a "
                                                                      "completion that never reached its end of turn")
    value_init: Literal["policy", "rm"] = Field("policy", description="value head start: zero on the policy, or "
                                                                      "the score head of the `rm` reward's run")

    @model_validator(mode="after")
    def _rewards_fit(self):
        if not self.rewards:
            raise ValueError("stage ppo needs at least one reward, e.g. rewards: [{name: label_match}] or "
                             "[{name: rm, model: runs/my-rm}]")
        if self.value_init == "rm" and not any(r.name == "rm" for r in self.rewards):
            raise ValueError("value_init: rm starts the value head from the `rm` reward's run, but no reward is "
                             "named rm (add {name: rm, model: runs/my-rm} or set value_init: policy)")
        return self


# ---- data: prompts, their label and columns ---------------------------------------------------------------------


def _check_budget(params: PpoParams, data_cfg) -> None:
    if params.max_completion_length >= data_cfg.cutoff_len:
        raise ConfigError(f"stage.max_completion_length={params.max_completion_length} leaves no room for a prompt "
                          f"in data.cutoff_len={data_cfg.cutoff_len}",
                          hint="raise data.cutoff_len or lower stage.max_completion_length")


def _too_long_error(too_long: list[tuple[Record, int]], params: PpoParams, cutoff: int) -> DataError:
    rec, n = too_long[0]
    file, line = rec.location()
    longest = max(k for _, k in too_long)
    m = params.max_completion_length
    return DataError(f"the prompt is {n} tokens: with stage.max_completion_length={m} it needs {n + m} > "
                     f"data.cutoff_len={cutoff} ({len(too_long)} prompt(s) too long, the longest {longest} tokens)",
                     file=file, line=line,
                     hint=f"raise data.cutoff_len to {longest + m}, lower stage.max_completion_length, or shorten "
                          f"those prompts")


class PromptCollator:
    """Left-pads a batch of prompts for generation; `rows` carries each prompt's conversation, label and columns
    for the reward functions (not tensors)."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, items: list[dict]) -> dict:
        width = max(len(it["prompt_ids"]) for it in items)
        ids = torch.full((len(items), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for b, it in enumerate(items):
            n = len(it["prompt_ids"])
            ids[b, width - n:] = torch.tensor(it["prompt_ids"])
            mask[b, width - n:] = 1
        rows = [{"messages": it["messages"], "label": it["label"], "extra": it["extra"]} for it in items]
        return {"input_ids": ids, "attention_mask": mask, "n_real": mask.sum(1), "rows": rows}


def reward_columns(rows: list[dict]) -> dict[str, list]:
    """Every dataset column of the batch as a keyword list (None where a row lacks it), and `label`: the row's
    answer, else its own `label` column."""
    keys = sorted({k for r in rows for k in r["extra"] if k not in REWARD_ARGS})
    columns = {k: [r["extra"].get(k) for r in rows] for k in keys}
    columns["label"] = [r["label"] if r["label"] is not None else r["extra"].get("label") for r in rows]
    return columns


# ---- generation helpers ----------------------------------------------------------------------------------------


class Stops:
    """How a completion ends under the chat template: single-token stops (eos, an end-of-turn token) end it at
    that token; a stop text spelled with several tokens ends it at the token that completes the text."""

    def __init__(self, tok):
        self.tok = tok
        self.ids = template_stop_token_ids(tok)
        self.texts = template_stop_strings(tok)
        self.multi = [s for s in self.texts if single_token_id(tok, s) is None]

    def generate_kwargs(self) -> dict:
        kw = {"eos_token_id": self.ids or None}
        if self.multi:
            kw.update(stop_strings=self.multi, tokenizer=self.tok)
        return kw

    def length(self, ids: list[int]) -> tuple[int, bool]:
        """(tokens the completion keeps, whether it reached a stop) for the tokens generated for one prompt."""
        hit = next((i for i, t in enumerate(ids) if t in self.ids), None)
        if hit is not None:
            return hit + 1, True
        if self.multi:
            prefixes = range(1, len(ids) + 1)
            n = bisect.bisect_left(prefixes, True, key=lambda k: self._has_stop_text(ids[:k]))
            if n < len(ids):
                return n + 1, True
        return len(ids), False

    def _has_stop_text(self, ids: list[int]) -> bool:
        text = self.tok.decode(ids)
        return any(s in text for s in self.multi)

    def text(self, ids: list[int]) -> str:
        """The completion as the reward functions read it: special tokens skipped, cut before a stop text."""
        text = self.tok.decode(ids, skip_special_tokens=True)
        hits = [i for i in (text.find(s) for s in self.texts if s) if i >= 0]
        return text[:min(hits)] if hits else text


def disable_dropout(model) -> None:
    """Dropout off everywhere (PPO compares log-probs of the same tokens across forward passes)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


class ValueHead(torch.nn.Module):
    """V(prefix): one linear layer on the last hidden state, kept in float32."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1)


def _score_layer(reward_model):
    """The one-output linear head of a sequence-classification model."""
    for name in ("score", "classifier"):
        layer = getattr(reward_model, name, None)
        if isinstance(layer, torch.nn.Linear):
            return layer
    return None


def init_value_from_rm(head: ValueHead, rm_run: str, device) -> None:
    """Copy the score head of an rm run into the value head (same hidden size required)."""
    from tuneforge.stages.rm import load_reward_model

    rm, _ = load_reward_model(rm_run, device=str(device))
    layer = _score_layer(rm)
    hidden = head.linear.in_features
    if layer is None or tuple(layer.weight.shape) != (1, hidden):
        shape = tuple(layer.weight.shape) if layer is not None else "none"
        raise ConfigError(f"value_init: rm: the score head of {rm_run} has shape {shape}, the policy's value head "
                          f"needs (1, {hidden})", hint="train the rm from the policy's base model, or set "
                                                       "stage.value_init=policy")
    with torch.no_grad():
        head.linear.weight.copy_(layer.weight.float())
        head.linear.bias.copy_(layer.bias.float() if layer.bias is not None else torch.zeros(1))
    del rm


# ---- the Trainer -------------------------------------------------------------------------------------------------


class PpoTrainer(BatchMetricsTrainer):
    """Rollout, reward, GAE and the clipped PPO losses inside the Trainer's training step (see module docstring).
    `rewards`: (name, callable, weight) triples; `reference`: "adapter" (the PEFT adapter disabled) or "copy"
    (`ref_model`)."""

    def __init__(self, *args, params: PpoParams, rewards: list[tuple[str, object, float]], reference: str,
                 ref_model=None, value_head: ValueHead, stops: Stops, **kwargs):
        super().__init__(*args, **kwargs)
        self.params, self.rewards, self.stops = params, rewards, stops
        self.reference, self.ref_model, self.value_head = reference, ref_model, value_head
        self.kl_ctl = (AdaptiveKLController(params.kl_coef, params.kl_target, params.kl_horizon)
                       if params.kl_target else FixedKLController(params.kl_coef))
        self._buffer: dict[int, dict] = {}
        self._buffer_step, self._micro = -1, 0

    # -- the step

    def training_step(self, model, inputs, num_items_in_batch=None):
        rollout = dict(self._rollout_for_step(model, inputs))
        model.train()
        self.store(model, rollout.pop("metrics"))
        return super().training_step(model, rollout, num_items_in_batch)

    def _rollout_for_step(self, model, inputs) -> dict:
        """A fresh rollout, or with ppo_epochs > 1 the one this micro-batch slot used in the previous optimizer
        steps of the same PPO round."""
        if self.params.ppo_epochs == 1:
            return self._rollout(model, inputs)
        step = self.state.global_step
        if step != self._buffer_step:
            self._buffer_step, self._micro = step, 0
            if step % self.params.ppo_epochs == 0:
                self._buffer = {}
        slot, self._micro = self._micro, self._micro + 1
        if slot not in self._buffer:
            self._buffer[slot] = self._rollout(model, inputs)
        return self._buffer[slot]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mask = inputs["completion_mask"]
        logits, logprobs, values = self._forward(model, inputs, with_values=True)
        pg_loss, clipfrac, approx_kl = policy_loss(logprobs, inputs["old_logprobs"], inputs["advantages"], mask,
                                                   self.params.cliprange)
        vf_loss, vf_clipfrac = value_loss(values, inputs["old_values"], inputs["returns"], mask,
                                          self.params.cliprange_value)
        loss = pg_loss + self.params.vf_coef * vf_loss
        entropy = masked_mean(entropy_from_logits(logits.detach()), mask)
        self.store(model, {"policy_loss": pg_loss.reshape(1), "value_loss": vf_loss.reshape(1),
                           "clipfrac": clipfrac.reshape(1), "value_clipfrac": vf_clipfrac.reshape(1),
                           "approx_kl": approx_kl.reshape(1), "entropy": entropy.reshape(1)})
        return (loss, {"values": values}) if return_outputs else loss

    # -- rollout

    def _rollout(self, model, inputs) -> dict:
        policy = self.accelerator.unwrap_model(model)
        with torch.no_grad():
            seq, scores, metrics = self._sample_and_score(policy, inputs, sample=True)
            with self._eval_mode(policy):
                _, logprobs, values = self._forward(policy, seq, with_values=True)
                ref_logprobs = self._reference_logprobs(policy, seq)
            mask = seq["completion_mask"]
            rewards, kl = kl_penalty_rewards(logprobs, ref_logprobs, scores, mask, self.kl_ctl.value)
            if self.params.whiten_rewards:
                rewards = masked_whiten(rewards, mask, shift_mean=False)
            advantages, returns = gae_advantages(rewards, values, mask, self.params.gamma, self.params.lam)
            advantages = masked_whiten(advantages, mask)
        kl_sum = kl.sum(1)
        metrics.update(kl=kl_sum, non_score_reward=-self.kl_ctl.value * kl_sum,
                       kl_coef=torch.tensor([self.kl_ctl.value]))
        self._update_kl_coef(kl_sum)
        return {**seq, "old_logprobs": logprobs, "old_values": values * mask, "advantages": advantages,
                "returns": returns, "metrics": metrics}

    def _update_kl_coef(self, kl_sum: torch.Tensor) -> None:
        mean_kl, n = kl_sum.mean(), kl_sum.numel() * self.accelerator.num_processes
        if self.accelerator.num_processes > 1:
            mean_kl = self.accelerator.reduce(mean_kl, reduction="mean")
        self.kl_ctl.update(float(mean_kl), n)

    def _sample_and_score(self, policy, inputs, *, sample: bool):
        """(prompt + completion sequences, scores, metrics) for one completion per prompt of `inputs`."""
        completion_ids, lengths, stopped = self._generate(policy, inputs, sample=sample)
        kept = [ids[:n] for ids, n in zip(completion_ids.tolist(), lengths.tolist())]
        texts = [self.stops.text(ids) for ids in kept]
        scores, metrics = self._score(inputs["rows"], texts, kept)
        scores = scores.to(completion_ids.device)
        if self.params.missing_eos_penalty:
            scores = scores - self.params.missing_eos_penalty * (~stopped).float()
        seq = self._sequences(inputs, completion_ids, lengths)
        metrics.update(reward=scores, completion_length=lengths.float(), missing_eos=(~stopped).float())
        return seq, scores, metrics

    @contextlib.contextmanager
    def _eval_mode(self, policy):
        was_training = policy.training
        policy.eval()
        try:
            yield
        finally:
            policy.train(was_training)

    def _generate(self, policy, inputs, *, sample: bool):
        """(completion ids (B, T), kept lengths (B,), stopped (B,) bool); T ≤ max_completion_length."""
        p = self.params
        decoding = ({"do_sample": True, "temperature": p.temperature, "top_p": p.top_p, "top_k": 0} if sample
                    else {"do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": 50})
        kw = {"max_new_tokens": p.max_completion_length, "pad_token_id": self.processing_class.pad_token_id,
              "use_cache": True, **decoding, **self.stops.generate_kwargs()}
        width = inputs["input_ids"].shape[1]
        use_cache = policy.config.use_cache
        policy.config.use_cache = True  # off while training (see train.runner), needed for fast sampling
        try:
            with self._eval_mode(policy):
                out = policy.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **kw)
        finally:
            policy.config.use_cache = use_cache
        completion = out[:, width:]
        ends = [self.stops.length(row) for row in completion.tolist()]
        lengths = torch.tensor([n for n, _ in ends], device=completion.device)
        stopped = torch.tensor([hit for _, hit in ends], device=completion.device)
        return completion, lengths, stopped

    def _sequences(self, inputs, completion, lengths) -> dict:
        """Prompt + completion as one left-padded batch, padding after each completion's end masked out."""
        positions = torch.arange(completion.shape[1], device=completion.device)
        completion_mask = (positions.unsqueeze(0) < lengths.unsqueeze(1)).long()
        completion = completion.masked_fill(completion_mask == 0, self.processing_class.pad_token_id)
        attention = torch.cat([inputs["attention_mask"], completion_mask], dim=1)
        return {"input_ids": torch.cat([inputs["input_ids"], completion], dim=1), "attention_mask": attention,
                "position_ids": (attention.cumsum(1) - 1).clamp(min=0), "completion_ids": completion,
                "completion_mask": completion_mask.float(), "n_real": attention.sum(1),
                "prompt_width": inputs["input_ids"].shape[1]}

    def _forward(self, model, seq, *, with_values: bool = False):
        """(tempered logits, log-probs of the completion tokens, values of their prefixes or None)."""
        width = seq["prompt_width"]
        out = model(input_ids=seq["input_ids"], attention_mask=seq["attention_mask"],
                    position_ids=seq["position_ids"], output_hidden_states=with_values, use_cache=False)
        logits = out.logits[:, width - 1:-1].float() / self.params.temperature
        logprobs = token_logprobs(logits, seq["completion_ids"])
        values = self.value_head(out.hidden_states[-1][:, width - 1:-1]) if with_values else None
        return logits, logprobs, values

    def _reference_logprobs(self, policy, seq):
        if self.reference == "adapter":
            with policy.disable_adapter():
                return self._forward(policy, seq)[1]
        return self._forward(self.ref_model, seq)[1]

    def _score(self, rows: list[dict], texts: list[str], completion_ids: list[list[int]]):
        """(weighted score per completion, per-reward metrics)."""
        prompts = [r["messages"] for r in rows]
        completions = [[{"role": "assistant", "content": t}] for t in texts]
        columns = reward_columns(rows)
        total, metrics = torch.zeros(len(rows)), {}
        for name, fn, weight in self.rewards:
            values = _checked_values(name, fn(prompts, completions, completion_ids=completion_ids, **columns),
                                     len(rows))
            total += weight * torch.tensor([0.0 if v is None else v for v in values])
            metrics[f"reward/{name}"] = torch.tensor([v for v in values if v is not None], dtype=torch.float)
            metrics[f"reward/{name}/none"] = torch.tensor([float(v is None) for v in values])
        return total, metrics

    # -- evaluation: greedy answers to the validation prompts

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        policy = self.accelerator.unwrap_model(model)
        with torch.no_grad(), self._eval_mode(policy):
            seq, _, metrics = self._sample_and_score(policy, inputs, sample=False)
            logprobs = self._forward(policy, seq)[1]
            kl = (logprobs - self._reference_logprobs(policy, seq)) * seq["completion_mask"]
        self.store(model, {**metrics, "kl": kl.sum(1)})
        return None, None, None

    def log(self, logs, *args, **kwargs):
        if "loss" in logs:  # a training log: what the reward functions report (e.g. a judge's failures)
            logs = {**logs, **reward_metrics(fn for _, fn, _ in self.rewards)}
        return super().log(logs, *args, **kwargs)

    # -- the value head and KL coefficient travel with checkpoints, never into the final model

    @contextlib.contextmanager
    def _without_value_head(self):
        model = self.accelerator.unwrap_model(self.model)
        head = model._modules.pop(VALUE_HEAD, None)
        try:
            yield
        finally:
            if head is not None:
                model._modules[VALUE_HEAD] = head

    def _save(self, output_dir=None, state_dict=None):
        if state_dict is not None:
            state_dict = {k: v for k, v in state_dict.items() if VALUE_HEAD not in k}
        with self._without_value_head():
            super()._save(output_dir, state_dict=state_dict)

    def save_model(self, output_dir=None, _internal_call=False):
        super().save_model(output_dir, _internal_call=_internal_call)
        if _internal_call and output_dir and self.args.should_save:  # a checkpoint
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
                      os.path.join(output_dir, VALUE_HEAD_FILE))
            with open(os.path.join(output_dir, STATE_FILE), "w", encoding="utf-8") as f:
                json.dump(self.kl_ctl.state_dict(), f)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        with self._without_value_head():
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_ppo_state(resume_from_checkpoint)

    def _load_best_model(self):
        with self._without_value_head():
            super()._load_best_model()

    def _load_ppo_state(self, checkpoint: str) -> None:
        from safetensors.torch import load_file

        head_file, state_file = os.path.join(checkpoint, VALUE_HEAD_FILE), os.path.join(checkpoint, STATE_FILE)
        if not os.path.isfile(head_file):
            raise ConfigError(f"checkpoint {checkpoint} has no {VALUE_HEAD_FILE}: it was not written by stage ppo",
                              hint="resume from a ppo run's checkpoint, or start a new run (train.resume=never)")
        device = self.value_head.linear.weight.device
        self.value_head.load_state_dict(load_file(head_file, device=str(device)))
        if os.path.isfile(state_file):
            with open(state_file, encoding="utf-8") as f:
                self.kl_ctl.load_state_dict(json.load(f))


def _checked_values(name: str, values, n: int) -> list[float | None]:
    """A reward function's answer as floats or None, one per completion (a clear error otherwise)."""
    values = list(values) if values is not None else []
    if len(values) != n:
        raise ConfigError(f"reward {name} returned {len(values)} values for {n} completions",
                          hint="a reward function returns one float (or None) per completion")
    out = []
    for v in values:
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
            raise ConfigError(f"reward {name} returned {v!r}; a reward is a number, or None where it does not apply")
        out.append(None if v is None else float(v))
    return out


def _reward_names(specs: list[RewardSpec], fns) -> list[str]:
    """A metric name per reward: a custom function's own name (`fn` of `file.py:fn`), else the name the reward
    carries (label_match, rm:<run>, judge), numbered when two rewards share one."""
    names = []
    for spec, fn in zip(specs, fns):
        base = spec.name.rpartition(":")[2] if ":" in spec.name else getattr(fn, "__name__", spec.name)
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


# ---- the stage ---------------------------------------------------------------------------------------------------


class PpoStage(Stage):
    name = "ppo"
    description = ("PPO: sample answers to prompts, score them with rewards (an rm run, functions, a judge), clipped "
                   "policy and value updates with a KL penalty to the reference")
    accepts = ("chat", "prompt")
    Params = PpoParams
    metrics = ("eval_reward", "eval_kl", "eval_completion_length", "eval_missing_eos")
    auto_metric = "eval_reward"
    lr_scale = 0.1  # RL moves a trained model in small steps: a tenth of the method's SFT rate

    def prepare(self, records, tok, data_cfg, params) -> Prepared:
        _check_budget(params, data_cfg)
        items, too_long = [], []
        for rec, messages, label, ids in prompt_rows(records, tok):
            if len(ids) + params.max_completion_length > data_cfg.cutoff_len:
                too_long.append((rec, len(ids)))
                continue
            items.append({"prompt_ids": ids, "messages": messages, "label": label, "extra": dict(rec.extra)})
        if too_long:
            raise _too_long_error(too_long, params, data_cfg.cutoff_len)
        stats = RenderStats(rows=len(records), kept=len(items), tokens=sum(len(it["prompt_ids"]) for it in items))
        return Prepared(items, stats.as_dict())

    def render_for_preview(self, records, tok, data_cfg, params):
        """The prompt tokens (nothing is trained on them); a prompt that leaves no room for max_completion_length
        is shown with a note (training refuses it)."""
        stats, shown = RenderStats(), []
        budget = data_cfg.cutoff_len - params.max_completion_length
        for rec, messages, label, ids in prompt_rows(records, tok):
            stats.rows += 1
            note = f" · over the prompt budget of {budget} tokens" if len(ids) > budget else ""
            note += " · label " + repr(label)[:40] if label is not None else ""
            shown.append(Rendered(ids, [IGNORE] * len(ids), f"{rec.source} · prompt{note}"))
        stats.kept = len(shown)
        stats.tokens = sum(len(r.input_ids) for r in shown)
        return shown, stats.as_dict()

    def check_plan(self, cfg, params, batch_size: int, world_size: int) -> None:
        if batch_size < 2:
            raise ConfigError(f"train.batch_size={batch_size}: stage ppo whitens the advantages over the completions "
                              f"of a batch, so a single completion would cancel its own reward",
                              hint="set train.batch_size to 2 or more (grad_accum does not help here)")
        for spec in params.rewards:
            check_reward(spec)

    def collators(self, tok, data_cfg, params):
        return PromptCollator(tok.pad_token_id), PromptCollator(tok.pad_token_id)

    def build(self, *, model, tok, train_items, val_items, args, callbacks, counter, params, data_cfg, out_dir):
        disable_dropout(model)
        reference = "adapter" if hasattr(model, "disable_adapter") else "copy"
        ref_model = copy.deepcopy(model).eval().requires_grad_(False) if reference == "copy" else None
        value_head = self._value_head(model, params)
        model.add_module(VALUE_HEAD, value_head)  # trained and saved with the policy (see PpoTrainer)
        fns = [build_reward(spec) for spec in params.rewards]
        rewards = list(zip(_reward_names(params.rewards, fns), fns, [s.weight for s in params.rewards]))
        train_collator, eval_collator = self.collators(tok, data_cfg, params)
        return PpoTrainer(model=model, args=args, train_dataset=ListDataset(train_items),
                          eval_dataset=ListDataset(val_items) if val_items else None, data_collator=train_collator,
                          eval_collator=eval_collator, processing_class=tok, callbacks=callbacks,
                          token_counter=counter, params=params, rewards=rewards, reference=reference,
                          ref_model=ref_model, value_head=value_head, stops=Stops(tok))

    def _value_head(self, model, params) -> ValueHead:
        device = next(model.parameters()).device
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        head = ValueHead(config.hidden_size).to(device)
        if params.value_init == "rm":
            rm = next(s for s in params.rewards if s.name == "rm")
            init_value_from_rm(head, str(rm.args["model"]), device)
        return head
