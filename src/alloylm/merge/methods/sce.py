"""SCE: select the entries where the models vary most, weight each model by its task vector's
energy, erase sign conflicts, and average.

Wan et al., "FuseChat: knowledge fusion of chat models", 2024, https://arxiv.org/abs/2408.07990
(Select, Calculate, Erase). As mergekit's `sce`: with `select_topk` < 1, only the `select_topk`
fraction of entries (of those that vary at all) with the largest variance across the task vectors
is kept in every task vector; each model weighs mean(tau_i^2) / sum_j mean(tau_j^2) (equal
weights when all are ~0); signs are elected as in TIES (sum), and the agreeing entries are
averaged with those weights. No per-model parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall
from alloylm.merge.methods.ties import elect_sign


def select_mask(deltas: torch.Tensor, fraction: float) -> torch.Tensor:
    """1 at the `fraction` of entries (of the varying ones) with the largest variance over models."""
    if fraction <= 0:
        return torch.zeros_like(deltas[0])
    if fraction >= 1:
        return torch.ones_like(deltas[0])
    variance = torch.var(deltas, dim=0, unbiased=False)
    k = int(torch.count_nonzero(variance) * fraction)
    mask = torch.zeros_like(variance)
    if k > 0:
        mask.view(-1)[torch.topk(variance.abs().view(-1), k=k, largest=True).indices] = 1
    return mask


def energy_weights(deltas: torch.Tensor) -> torch.Tensor:
    """mean(tau_i^2), normalized to sum 1 (1/N each when they sum to ~0)."""
    energy = deltas.square().reshape(deltas.shape[0], -1).mean(dim=1)
    total = float(energy.sum())
    if abs(total) < 1e-6:
        return torch.ones_like(energy) / energy.shape[0]
    return energy / total


def sce(
    base: torch.Tensor, tensors: Sequence[torch.Tensor], select_topk: float = 1.0
) -> torch.Tensor:
    """base + the energy-weighted mean of the selected, sign-agreeing task vectors; float32."""
    base32 = base.float()
    if not tensors:
        return base32
    deltas = torch.stack([x.float() - base32 for x in tensors])
    if select_topk < 1:
        deltas = deltas * select_mask(deltas, select_topk).unsqueeze(0)
    sign = elect_sign(list(deltas))
    agree = (deltas.sign() == sign).to(deltas.dtype)
    weights = energy_weights(deltas).view(-1, *([1] * (deltas.dim() - 1))) * agree
    return base32 + (deltas * weights).sum(dim=0) / weights.sum(dim=0).clamp(min=1e-6)


def _apply(call: MethodCall) -> Merged:
    return Merged(sce(call.base, call.others, float(call.parameters["select_topk"])))


METHOD = MergeMethod(_apply, parameters={"select_topk": 1.0, "int8_mask": False})
