"""Model Breadcrumbs: drop both the largest outliers and the smallest entries of each task vector.

Davari & Belilovsky, "Model Breadcrumbs: scaling multi-task model merging with sparse masks",
ECCV 2024, https://arxiv.org/abs/2312.06795. As mergekit's `breadcrumbs` (sparsification
"magnitude_outliers"): per task vector, rank the entries by magnitude; the `gamma` fraction with the
largest magnitude is dropped, then the smallest, so that a `density` fraction remains (fewer
outliers are dropped when both cannot hold). Then task arithmetic: base + lambda * sum_i w_i mask_i,
divided by sum_i w_i when `normalize`. Defaults are mergekit's (density 1, gamma 0.01, no
normalize, no rescale, lambda 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall
from alloylm.merge.methods.task_arithmetic import mix_deltas, rescale_to_l1, task_vectors


def magnitude_band(
    delta: torch.Tensor, density: float, gamma: float, *, rescale: bool = False
) -> torch.Tensor:
    """Keep the `density` fraction of entries just below the top `gamma` fraction by magnitude."""
    if density >= 1.0:
        return delta
    count = delta.numel()
    keep = int(density * count)
    top = int(gamma * count)
    bottom = max(0, count - keep - top)
    order = torch.argsort(delta.reshape(-1).abs().float())
    mask = torch.zeros(count, dtype=delta.dtype)
    mask[order[bottom : bottom + keep]] = 1
    kept = delta * mask.view_as(delta)
    return rescale_to_l1(delta, kept) if rescale else kept


def breadcrumbs(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    densities: Sequence[float],
    gammas: Sequence[float],
    *,
    rescale: bool = False,
    normalize: bool = False,
    lambda_: float = 1.0,
) -> torch.Tensor:
    """base + lambda * sum_i w_i band(x_i - base); float32."""
    deltas = [
        magnitude_band(delta, density, gamma, rescale=rescale)
        for delta, density, gamma in zip(
            task_vectors(base, tensors), densities, gammas, strict=True
        )
    ]
    return base.float() + lambda_ * mix_deltas(deltas, weights, normalize=normalize)


def _apply(call: MethodCall) -> Merged:
    return Merged(
        breadcrumbs(
            call.base,
            call.others,
            call.weights(),
            call.densities(),
            [float(row["gamma"]) for row in call.per_model[1:]],
            rescale=bool(call.parameters["rescale"]),
            normalize=bool(call.parameters["normalize"]),
            lambda_=float(call.parameters["lambda"]),
        )  # fmt: skip
    )


METHOD = MergeMethod(
    _apply,
    parameters={"normalize": False, "rescale": False, "lambda": 1.0},
    model_parameters={"weight": None, "density": 1.0, "gamma": 0.01},
)
