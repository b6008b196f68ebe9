"""Each preference loss against its paper's formula, computed by hand with `math` on a fixed batch of two pairs."""

from __future__ import annotations

import math

import pytest
import torch

from tuneforge.stages.pref_losses import dpo_loss, log_odds, orpo_loss, simpo_loss
from tuneforge.stages.logps import sequence_logps
from tuneforge.stages.rm import reward_loss

PC, PR, RC, RR = [-4.0, -7.5], [-6.0, -7.0], [-5.0, -7.0], [-5.5, -6.0]  # summed log-probs of two pairs
NC, NR = [4.0, 5.0], [6.0, 3.0]  # answer token counts


def t(xs):
    return torch.tensor(xs, dtype=torch.float64)


def logsig(x):
    return -math.log1p(math.exp(-x))


def margins(beta=1.0):
    return [beta * ((pc - rc) - (pr - rr)) for pc, pr, rc, rr in zip(PC, PR, RC, RR)]


@pytest.mark.parametrize("beta, eps", [(0.1, 0.0), (0.5, 0.2)])
def test_sigmoid_is_dpo_and_cdpo(beta, eps):
    loss, rc, rr = dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=beta, kind="sigmoid", label_smoothing=eps)
    want = [-(1 - eps) * logsig(m) - eps * logsig(-m) for m in margins(beta)]
    assert loss.tolist() == pytest.approx(want, rel=1e-12)
    assert rc.tolist() == pytest.approx([beta * (a - b) for a, b in zip(PC, RC)])
    assert rr.tolist() == pytest.approx([beta * (a - b) for a, b in zip(PR, RR)])


def test_robust_dpo():
    beta, eps = 0.3, 0.1
    loss, *_ = dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=beta, kind="robust", label_smoothing=eps)
    want = [(-(1 - eps) * logsig(m) + eps * logsig(-m)) / (1 - 2 * eps) for m in margins(beta)]
    assert loss.tolist() == pytest.approx(want, rel=1e-12)


def test_ipo_and_hinge():
    beta = 0.25
    ipo, *_ = dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=beta, kind="ipo")
    assert ipo.tolist() == pytest.approx([(h - 1 / (2 * beta)) ** 2 for h in margins()], rel=1e-12)
    hinge, *_ = dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=beta, kind="hinge")
    assert hinge.tolist() == pytest.approx([max(0.0, 1 - beta * h) for h in margins()], rel=1e-12)


def test_dpo_at_the_reference_is_log_2():
    loss, rc, rr = dpo_loss(t(PC), t(PR), t(PC), t(PR), beta=0.1)
    assert loss.tolist() == pytest.approx([math.log(2)] * 2) and rc.tolist() == [0, 0] == rr.tolist()


def test_simpo():
    beta, gamma = 2.0, 0.5
    loss, rc, rr = simpo_loss(t(PC), t(PR), t(NC), t(NR), beta=beta, gamma=gamma)
    want = [-logsig(beta * pc / nc - beta * pr / nr - gamma) for pc, pr, nc, nr in zip(PC, PR, NC, NR)]
    assert loss.tolist() == pytest.approx(want, rel=1e-12)
    assert rc.tolist() == pytest.approx([beta * pc / nc for pc, nc in zip(PC, NC)])


def test_orpo():
    lam = 0.1
    loss, *_ = orpo_loss(t(PC), t(PR), t(NC), t(NR), lam=lam)

    def odds(a):  # log(p / (1 - p)) with p = exp(a)
        p = math.exp(a)
        return math.log(p / (1 - p))

    want = [-pc / nc - lam * logsig(odds(pc / nc) - odds(pr / nr)) for pc, pr, nc, nr in zip(PC, PR, NC, NR)]
    assert loss.tolist() == pytest.approx(want, rel=1e-9)
    assert log_odds(t([-1e-9])).item() > 10  # stays finite near p = 1


def test_bradley_terry_reward_loss_with_margin_and_centering():
    c, r = t([1.0, -0.5]), t([0.2, 0.4])
    got = reward_loss(c, r, margin=t([0.5, 0.0]), center_coef=0.01).item()
    want = (-logsig(1.0 - 0.2 - 0.5) - logsig(-0.5 - 0.4)) / 2 + 0.01 * ((1.2) ** 2 + (-0.1) ** 2) / 2
    assert got == pytest.approx(want, rel=1e-12)


def test_sequence_logps_sum_only_the_labelled_next_tokens():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 5, dtype=torch.float64)
    labels = torch.tensor([[-100, -100, 3, 1]])  # tokens 2 and 3 are the answer
    total, n = sequence_logps(logits, labels)
    lp = torch.log_softmax(logits, -1)
    assert n.item() == 2 and total.item() == pytest.approx((lp[0, 1, 3] + lp[0, 2, 1]).item(), rel=1e-6)


def test_kto_against_the_paper():
    from tuneforge.stages.kto import kto_loss

    r, z, beta = [0.8, -0.3, 0.2], 0.1, 0.5
    got = kto_loss(t(r), torch.tensor(z, dtype=torch.float64), t([1, 0, 0]), beta=beta, desirable_weight=1.0,
                   undesirable_weight=1.5).tolist()

    def sig(x):
        return 1 / (1 + math.exp(-x))

    want = [1 - sig(beta * (0.8 - z)), 1.5 * (1 - sig(beta * (z + 0.3))), 1.5 * (1 - sig(beta * (z - 0.2)))]
    assert got == pytest.approx(want, rel=1e-12)
