"""Preference losses on per-sequence log-probabilities, each written from its paper's formula (tensors of B pairs).

Notation: `pc`, `pr` are the policy's summed log-probs of the chosen / rejected answer tokens; `rc`, `rr` the
reference model's; `nc`, `nr` the answers' token counts. h = (pc − rc) − (pr − rr) is the DPO log-ratio margin.

- sigmoid (DPO, Rafailov et al. 2023):  −log σ(β h);
  with label smoothing ε (cDPO):        −(1−ε) log σ(β h) − ε log σ(−β h)
- robust (Chowdhury et al. 2024):       (−(1−ε) log σ(β h) + ε log σ(−β h)) / (1 − 2ε)
- ipo (Azar et al. 2023):               (h − 1/(2β))²
- hinge (SLiC, Zhao et al. 2023):       max(0, 1 − β h)
- simpo (Meng et al. 2024, no ref.):    −log σ(β pc/nc − β pr/nr − γ)
- orpo (Hong et al. 2024, no ref.):     −pc/nc (the SFT term) − λ log σ(log odds(chosen) − log odds(rejected)),
                                        log odds(y) = a − log(1 − e^a) with a the mean token log-prob of y
The implicit rewards logged are β(pc − rc), β(pr − rr) for the DPO family, β·pc/nc, β·pr/nr for SimPO and
λ·pc/nc, λ·pr/nr for ORPO; accuracy is the share of pairs whose chosen reward is the higher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DPO_LOSSES = ("sigmoid", "robust", "ipo", "hinge")


def dpo_loss(pc, pr, rc, rr, *, beta: float, kind: str = "sigmoid", label_smoothing: float = 0.0):
    """Per-pair losses and (chosen, rejected) implicit rewards of the DPO family."""
    h = (pc - rc) - (pr - rr)
    eps = label_smoothing
    if kind == "sigmoid":
        loss = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    elif kind == "robust":
        loss = (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    elif kind == "ipo":
        loss = (h - 1 / (2 * beta)) ** 2
    elif kind == "hinge":
        loss = torch.relu(1 - beta * h)
    else:
        raise ValueError(f"unknown DPO loss {kind!r} (choose one of {', '.join(DPO_LOSSES)})")
    return loss, beta * (pc - rc).detach(), beta * (pr - rr).detach()


def simpo_loss(pc, pr, nc, nr, *, beta: float, gamma: float):
    """SimPO: length-normalised, reference-free, with a target reward margin γ."""
    chosen, rejected = beta * pc / nc, beta * pr / nr
    return -F.logsigmoid(chosen - rejected - gamma), chosen.detach(), rejected.detach()


def log_odds(mean_logp):
    """log(p / (1 − p)) for p = exp(mean_logp) < 1, computed stably (log1p(−e^a) = log(−expm1(a)))."""
    return mean_logp - torch.log(-torch.expm1(mean_logp.clamp(max=-1e-6)))


def orpo_loss(pc, pr, nc, nr, *, lam: float):
    """ORPO: the chosen answer's mean NLL plus λ times the odds-ratio loss."""
    ac, ar = pc / nc, pr / nr
    ratio = -F.logsigmoid(log_odds(ac) - log_odds(ar))
    return -ac + lam * ratio, (lam * ac).detach(), (lam * ar).detach()
