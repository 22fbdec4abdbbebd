"""TIES merging: trim small task-vector entries, elect a sign per entry, merge agreeing entries.

Yadav et al., "TIES-Merging: resolving interference when merging models", NeurIPS 2023,
https://arxiv.org/abs/2306.01708. Semantics follow mergekit's `ties` (magnitude trim to
`density`, sign elected from the sum of weighted task vectors, normalized by the weights of the
entries that agree).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall
from alloylm.merge.methods.task_arithmetic import mix_deltas, task_vectors


def magnitude_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the `density` fraction of entries with the largest magnitude (at least one when
    density > 0, as mergekit), zero the rest. Entries of equal magnitude at the cut are chosen
    as mergekit chooses them (the order of a descending argsort): `topk` chose others, and a
    tiny model's embedding differed from mergekit's by up to 70 bf16 ulps."""
    if density >= 1.0:
        return delta
    if density <= 0.0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    keep = max(1, int(density * delta.numel()))
    flat = delta.reshape(-1)
    mask = torch.zeros_like(flat)
    mask[torch.argsort(flat.abs(), descending=True)[:keep]] = 1.0
    return (flat * mask).view_as(delta)


def elect_sign(weighted_deltas: Sequence[torch.Tensor]) -> torch.Tensor:
    """+1 where the sum of weighted task vectors is >= 0, else -1 (TIES 'sum' election)."""
    total = torch.stack(list(weighted_deltas)).sum(dim=0)
    return (total >= 0).to(total.dtype) * 2 - 1


def ties(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    densities: Sequence[float],
    *,
    normalize: bool = True,
    lambda_: float = 1.0,
) -> torch.Tensor:
    """base + lambda * disjoint mean of the trimmed, sign-agreeing task vectors; float32."""
    deltas = [
        magnitude_trim(d, rho)
        for d, rho in zip(task_vectors(base, tensors), densities, strict=False)
    ]
    return sign_consensus_merge(base, deltas, weights, normalize=normalize, lambda_=lambda_)


def sign_consensus_merge(
    base: torch.Tensor,
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    *,
    normalize: bool,
    lambda_: float,
) -> torch.Tensor:
    """Elect signs from the weighted deltas, then add the agreeing part to the base."""
    sign = elect_sign([d * float(w) for d, w in zip(deltas, weights, strict=False)])
    mixed = mix_deltas(deltas, weights, sign_mask=sign, normalize=normalize)
    return base.float() + lambda_ * mixed


def _apply(call: MethodCall) -> Merged:
    return Merged(
        ties(
            call.base,
            call.others,
            call.weights(),
            call.densities(),
            normalize=bool(call.parameters["normalize"]),
            lambda_=float(call.parameters["lambda"]),
        )  # fmt: skip
    )


METHOD = MergeMethod(
    _apply,
    parameters={"normalize": True, "lambda": 1.0},
    model_parameters={"weight": None, "density": 1.0},
)
