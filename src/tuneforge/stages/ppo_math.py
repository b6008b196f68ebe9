"""The tensor arithmetic of ppo, free of models and Trainers so each piece is tested on tiny hand-made tensors.

Every per-token tensor is (B, T) over the completion tokens of a batch, with a 0/1 `mask` that is 1 on the
tokens each completion really has (its stop token included) and 0 on the padding after it.

    per-token reward   r_t = −β·(log π_old(y_t) − log π_ref(y_t)),  plus the sequence's score at its last token
    GAE                δ_t = r_t + γ·V_{t+1} − V_t,   A_t = δ_t + γ·λ·A_{t+1}   (V and A are 0 after the last token)
    returns            R_t = A_t + V_t
    policy loss        mean over tokens of max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)),   ρ = exp(log π − log π_old)
    value loss         ½·mean over tokens of max((V − R)², (V_old + clip(V − V_old, −ε_v, ε_v) − R)²)
    adaptive β         β ← β·(1 + clip(KL/target − 1, −0.2, 0.2)·n/horizon)   (Ziegler et al. 2019)
"""

from __future__ import annotations

import torch

WHITEN_EPS = 1e-8
KL_ERROR_CLIP = 0.2


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the entries of `x` where `mask` is 1 (0 when the mask is empty)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of the entries of `x` where `mask` is 1 (0 with fewer than two entries)."""
    n = mask.sum()
    centred = (x - masked_mean(x, mask)) * mask
    return (centred ** 2).sum() / (n - 1).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """`x` scaled to unit variance over the masked entries, and centred on 0 when `shift_mean`; 0 where masked
    out. `shift_mean=False` keeps the mean (whitening rewards must not turn a good score into a bad one)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last masked-in token of each row (0 for an empty row)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * mask.long()).max(dim=1).values


def kl_penalty_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, scores: torch.Tensor,
                       mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token rewards, per-token KL estimates): −kl_coef × (log π − log π_ref) on every token and the sequence's
    `score` (B,) added at its last token; both 0 on padding."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards * mask, kl


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
                   lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) by generalised advantage estimation, read backwards from each row's last token; the
    value after the last token is 0 (the episode ends there)."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                cliprange: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clipped surrogate loss, clip fraction, approximate KL(π_old‖π)) over the masked tokens. The clip fraction is
    the share of tokens where the clipped term is the larger loss (their gradient is cut)."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = masked_mean(0.5 * log_ratio ** 2, mask)
    return loss, clipfrac.detach(), approx_kl.detach()


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(clipped value loss, clip fraction): the new values may move at most `cliprange_value` from the rollout's
    values before the loss stops rewarding the move."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    clipfrac = masked_mean((clipped_error > unclipped_error).float(), mask)
    return loss, clipfrac.detach()


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of the softmax over the last dimension."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids) under the softmax of `logits` (…, V) at each position."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_samples: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict:
        return {"kl_coef": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["kl_coef"])


class AdaptiveKLController(FixedKLController):
    """A KL coefficient steered towards a target KL: raised while the measured KL is above the target, lowered
    while below, by at most 20 % × n_samples / horizon per update."""

    def __init__(self, kl_coef: float, target: float, horizon: int):
        super().__init__(kl_coef)
        self.target, self.horizon = float(target), int(horizon)

    def update(self, current_kl: float, n_samples: int) -> None:
        error = min(max(current_kl / self.target - 1, -KL_ERROR_CLIP), KL_ERROR_CLIP)
        self.value *= 1 + error * n_samples / self.horizon
