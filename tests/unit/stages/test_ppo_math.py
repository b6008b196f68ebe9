"""ppo's tensor arithmetic against values worked out by hand on tiny tensors (stages/ppo_math.py)."""

from __future__ import annotations

import math

import pytest
import torch

from tuneforge.stages.ppo_math import (AdaptiveKLController, FixedKLController, entropy_from_logits, gae_advantages,
                                       kl_penalty_rewards, last_token_index, masked_mean, masked_var, masked_whiten,
                                       policy_loss, token_logprobs, value_loss)

T = torch.tensor


def test_masked_mean_var_and_whitening_ignore_padding():
    x, mask = T([[1.0, 2.0, 99.0], [3.0, 99.0, 99.0]]), T([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    assert masked_var(x, mask).item() == pytest.approx(1.0)  # (1 + 0 + 1) / (3 - 1)
    w = masked_whiten(x, mask)
    torch.testing.assert_close(w, T([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), atol=1e-6, rtol=0)
    kept = masked_whiten(x, mask, shift_mean=False)  # scaled to unit variance, the mean of 2 kept
    torch.testing.assert_close(kept, T([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]), atol=1e-6, rtol=0)
    scaled = masked_whiten(T([[0.0, 4.0]]), T([[1.0, 1.0]]), shift_mean=False)  # var 8 → ÷ 2√2, mean 2 kept
    torch.testing.assert_close(scaled, T([[2 - 2 / math.sqrt(8), 2 + 2 / math.sqrt(8)]]), atol=1e-6, rtol=0)


def test_kl_penalty_adds_the_score_at_each_rows_last_token():
    logp, ref = T([[-1.0, -2.0, -3.0], [-1.0, -1.0, -9.0]]), T([[-1.5, -2.0, -1.0], [-2.0, -1.0, -1.0]])
    mask = T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = kl_penalty_rewards(logp, ref, T([10.0, 20.0]), mask, kl_coef=0.1)
    torch.testing.assert_close(kl, T([[0.5, 0.0, -2.0], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, T([[-0.05, 0.0, 10.2], [-0.1, 20.0, 0.0]]))
    assert last_token_index(mask).tolist() == [2, 1]


def test_gae_with_gamma_and_lambda_by_hand():
    # one row, three tokens: r = (0, 0, 1), V = (0.5, 0.2, 0.4), γ = 0.9, λ = 0.8
    rewards, values, mask = T([[0.0, 0.0, 1.0]]), T([[0.5, 0.2, 0.4]]), T([[1.0, 1.0, 1.0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    d2 = 1.0 + 0.9 * 0.0 - 0.4  # 0.6 (nothing after the last token)
    d1 = 0.0 + 0.9 * 0.4 - 0.2  # 0.16
    d0 = 0.0 + 0.9 * 0.2 - 0.5  # -0.32
    a2, a1 = d2, d1 + 0.72 * d2
    a0 = d0 + 0.72 * a1
    torch.testing.assert_close(adv, T([[a0, a1, a2]]))
    torch.testing.assert_close(ret, T([[a0 + 0.5, a1 + 0.2, a2 + 0.4]]))


def test_gae_stops_at_each_rows_end_and_is_zero_on_padding():
    rewards, values = T([[0.0, 2.0, 7.0], [1.0, 5.0, 5.0]]), T([[1.0, 1.0, 9.0], [0.0, 9.0, 9.0]])
    mask = T([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    # γ = λ = 1: advantages are the reward-to-go minus the value; padding (7, 9, 5) never leaks in
    torch.testing.assert_close(adv, T([[2.0 - 1.0, 2.0 - 1.0, 0.0], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(ret, T([[2.0, 2.0, 0.0], [1.0, 0.0, 0.0]]))
    adv0, _ = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.0)  # λ = 0: one-step TD errors
    torch.testing.assert_close(adv0, T([[0.0 + 1.0 - 1.0, 2.0 - 1.0, 0.0], [1.0, 0.0, 0.0]]))


def test_policy_loss_clips_the_ratio_and_counts_the_clipped_tokens():
    old = T([[0.0, 0.0, 0.0, 0.0]])
    new = torch.log(T([[1.5, 0.5, 1.1, 1.5]]))  # ratios 1.5, 0.5, 1.1, 1.5
    adv = T([[1.0, -1.0, 2.0, -1.0]])
    mask = T([[1.0, 1.0, 1.0, 1.0]])
    loss, clipfrac, approx_kl = policy_loss(new, old, adv, mask, cliprange=0.2)
    # per token max(−A·ρ, −A·clip(ρ)): (−1.5, −1.2) → −1.2 clipped; (0.5, 0.8) → 0.8 clipped;
    # (−2.2, −2.2) → −2.2 unclipped; (1.5, 1.2) → 1.5 unclipped (a worse ratio is never clipped away)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.2 + 1.5) / 4)
    assert clipfrac.item() == pytest.approx(0.5)
    assert approx_kl.item() == pytest.approx(float(0.5 * (new ** 2).mean()))
    same, none_clipped, zero_kl = policy_loss(old, old, adv, mask, cliprange=0.2)
    assert same.item() == pytest.approx(-adv.mean().item()) and none_clipped.item() == 0 and zero_kl.item() == 0


def test_policy_loss_gradient_raises_the_log_prob_of_an_advantaged_token():
    logp = T([[-1.0, -1.0]], requires_grad=True)
    loss, _, _ = policy_loss(logp, logp.detach(), T([[1.0, -1.0]]), T([[1.0, 1.0]]), cliprange=0.2)
    loss.backward()
    assert logp.grad[0, 0] < 0 < logp.grad[0, 1]  # gradient descent raises token 0, lowers token 1


def test_value_loss_clips_moves_away_from_the_rollout_values():
    old, ret, mask = T([[0.0, 0.0, 0.0]]), T([[1.0, 1.0, -1.0]]), T([[1.0, 1.0, 1.0]])
    values = T([[0.5, 2.0, 0.1]])
    loss, clipfrac = value_loss(values, old, ret, mask, cliprange_value=0.2)
    # clipped values (0.2, 0.2, 0.1); errors max((v−R)², (v_clip−R)²): max(.25, .64)=.64, max(1, .64)=1,
    # max(1.21, 1.21)=1.21
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.0 + 1.21) / 3)
    assert clipfrac.item() == pytest.approx(1 / 3)


def test_value_loss_falls_on_a_fixed_batch():
    """A value head fitted on one fixed batch: the clipped loss falls step after step (each round's values become
    the next round's old values, as successive PPO rollouts would)."""
    torch.manual_seed(0)
    features, returns = torch.randn(4, 6, 8), torch.randn(4, 6)
    mask = torch.ones(4, 6)
    mask[0, 4:] = 0
    head = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    losses = []
    for _ in range(30):
        old = head(features).squeeze(-1).detach()
        loss, _ = value_loss(head(features).squeeze(-1), old, returns, mask, cliprange_value=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:])) and losses[-1] < 0.8 * losses[0], losses


def test_entropy_and_token_logprobs():
    logits = T([[[0.0, 0.0, 0.0, 0.0], [10.0, -10.0, -10.0, -10.0]]])
    ent = entropy_from_logits(logits)
    assert ent[0, 0].item() == pytest.approx(math.log(4)) and ent[0, 1].item() == pytest.approx(0, abs=1e-6)
    lp = token_logprobs(logits, T([[2, 0]]))
    assert lp[0, 0].item() == pytest.approx(-math.log(4)) and lp[0, 1].item() == pytest.approx(0, abs=1e-6)


def test_adaptive_kl_coefficient_moves_towards_the_target():
    above = AdaptiveKLController(0.1, target=6.0, horizon=100)
    above.update(current_kl=12.0, n_samples=10)  # error clipped to +0.2: × (1 + 0.2·10/100)
    assert above.value == pytest.approx(0.1 * 1.02)
    below = AdaptiveKLController(0.1, target=6.0, horizon=100)
    below.update(current_kl=4.5, n_samples=10)  # error −0.25 clipped to −0.2
    assert below.value == pytest.approx(0.1 * 0.98)
    near = AdaptiveKLController(0.1, target=6.0, horizon=100)
    near.update(current_kl=6.6, n_samples=50)  # error +0.1: × 1.05
    assert near.value == pytest.approx(0.105)
    fixed = FixedKLController(0.1)
    fixed.update(100.0, 10)
    assert fixed.value == 0.1
    restored = AdaptiveKLController(0.5, target=6.0, horizon=100)
    restored.load_state_dict(above.state_dict())
    assert restored.value == above.value
