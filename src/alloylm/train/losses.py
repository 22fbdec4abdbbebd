"""Preference objectives as small pure functions of log-probabilities.

These are the formulas; the trainers (TRL's DPOTrainer and ORPOTrainer, reached through
`train/_trl.py` and `train/_trl_orpo.py`) compute them during training. We keep them here to
check, on hand-computed numbers and on toy batches, that the engine optimises what the study says
it does, and to explain the diagnostics (reward margin, accuracy) in plain maths.

Notation per preference pair: ``pi_c``/``pi_r`` are the policy's summed log-probabilities of the
chosen/rejected completion given the prompt, ``ref_c``/``ref_r`` the reference model's.
Inputs are floats or torch tensors of shape (batch,); results are per-pair (take the mean).
"""

from __future__ import annotations

import math
from typing import Any

Number = Any  # a float or a torch.Tensor


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch")


def log_sigmoid(x: Number) -> Number:
    """Numerically stable log(sigmoid(x)) for floats and tensors."""
    if _is_tensor(x):
        import torch.nn.functional as F

        return F.logsigmoid(x)
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def log1mexp(x: Number) -> Number:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (Maechler 2012,
    https://cran.r-project.org/web/packages/Rmpfr/vignettes/log1mexp-note.pdf)."""
    if _is_tensor(x):
        import torch

        return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))
    return math.log1p(-math.exp(x)) if x < -math.log(2) else math.log(-math.expm1(x))


def dpo_rewards(
    pi_c: Number, pi_r: Number, ref_c: Number, ref_r: Number, beta: float
) -> tuple[Number, Number]:
    """Implicit rewards beta * log(pi/ref) of chosen and rejected (Rafailov et al. 2023, eq. 5,
    https://arxiv.org/abs/2305.18290). Their difference is the "reward margin" we log."""
    return beta * (pi_c - ref_c), beta * (pi_r - ref_r)


def dpo_sigmoid_loss(
    pi_c: Number, pi_r: Number, ref_c: Number, ref_r: Number, beta: float
) -> Number:
    """DPO: -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))).

    Rafailov et al. 2023, "Direct Preference Optimization", eq. 7, https://arxiv.org/abs/2305.18290.
    At the start of training (policy == reference) the loss is log 2 = 0.6931 for every pair.
    """
    delta = (pi_c - ref_c) - (pi_r - ref_r)
    return -log_sigmoid(beta * delta)


def dpo_ipo_loss(
    pi_c: Number,
    pi_r: Number,
    ref_c: Number,
    ref_r: Number,
    beta: float,
    n_c: Number = 1,
    n_r: Number = 1,
) -> Number:
    """IPO: (h - 1 / (2 * beta))^2 with h the difference of per-token log-ratios.

    Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", eq. 17, https://arxiv.org/abs/2310.12036 (beta is the paper's tau). As in TRL,
    the log-ratios are divided by the completion lengths ``n_c``/``n_r`` (token-averaged).
    """
    h = (pi_c - ref_c) / n_c - (pi_r - ref_r) / n_r
    return (h - 1.0 / (2.0 * beta)) ** 2


def dpo_hinge_loss(pi_c: Number, pi_r: Number, ref_c: Number, ref_r: Number, beta: float) -> Number:
    """Hinge (SLiC-style) loss max(0, 1 - beta * delta).

    Zhao et al. 2023, "SLiC-HF", https://arxiv.org/abs/2305.10425; the DPO paper's appendix.
    """
    delta = (pi_c - ref_c) - (pi_r - ref_r)
    value = 1.0 - beta * delta
    if _is_tensor(value):
        return value.clamp(min=0.0)
    return max(0.0, value)


def orpo_log_odds_ratio(mean_logp_c: Number, mean_logp_r: Number) -> Number:
    """log( odds(y_c|x) / odds(y_r|x) ) with odds(y|x) = P / (1 - P) and log P = the mean token
    log-probability of the completion (length-normalised, as in the ORPO paper and TRL).

    Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model",
    eqs. 4 and 7, https://arxiv.org/abs/2403.07691.
    """
    return (mean_logp_c - mean_logp_r) - (log1mexp(mean_logp_c) - log1mexp(mean_logp_r))


def orpo_odds_ratio_loss(mean_logp_c: Number, mean_logp_r: Number) -> Number:
    """L_OR = -log sigmoid(log odds ratio) (Hong et al. 2024, eq. 7)."""
    return -log_sigmoid(orpo_log_odds_ratio(mean_logp_c, mean_logp_r))


def orpo_loss(nll_chosen: Number, mean_logp_c: Number, mean_logp_r: Number, beta: float) -> Number:
    """ORPO objective L = L_SFT + beta * L_OR (Hong et al. 2024, eq. 6; beta is the paper's lambda).

    ``nll_chosen`` is the supervised loss on the chosen sequence. TRL computes it over prompt and
    completion tokens of the batch (token-averaged) and averages L_OR over the pairs; pass the
    batch means to reproduce its value.
    """
    return nll_chosen + beta * orpo_odds_ratio_loss(mean_logp_c, mean_logp_r)


def simpo_loss(mean_logp_c: Number, mean_logp_r: Number, beta: float, gamma: float) -> Number:
    """SimPO: -log sigmoid(beta * (mean log-prob chosen - mean log-prob rejected) - gamma), the
    length-normalised log-likelihood as reward and a target margin gamma (Meng, Xia & Chen 2024,
    eq. 6, https://arxiv.org/abs/2405.14734)."""
    return -log_sigmoid(beta * (mean_logp_c - mean_logp_r) - gamma)


def cpo_loss(
    nll_chosen: Number, logp_c: Number, logp_r: Number, beta: float, alpha: float
) -> Number:
    """CPO: -log sigmoid(beta * (log-prob chosen - log-prob rejected)) + alpha * NLL of the chosen
    reply (summed log-probs, no reference; Xu et al. 2024, eq. 3 and 6,
    https://arxiv.org/abs/2401.08417)."""
    return -log_sigmoid(beta * (logp_c - logp_r)) + alpha * nll_chosen


def mean(values: Number) -> float:
    """Mean of a tensor or a sequence of floats, as a float."""
    if _is_tensor(values):
        return float(values.float().mean())
    values = list(values)
    return sum(values) / len(values)
