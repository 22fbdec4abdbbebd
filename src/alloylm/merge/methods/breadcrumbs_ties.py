"""Model Breadcrumbs with TIES: breadcrumbs' magnitude band, then TIES' sign election.

Davari & Belilovsky, "Model Breadcrumbs: scaling multi-task model merging with sparse masks",
ECCV 2024, https://arxiv.org/abs/2312.06795; sign election from Yadav et al., "TIES-Merging",
NeurIPS 2023, https://arxiv.org/abs/2306.01708. As mergekit's `breadcrumbs_ties`: each task
vector keeps the `density` fraction of entries just below its top `gamma` fraction by magnitude
(see `breadcrumbs.magnitude_band`); the weighted task vectors elect a sign per entry (sum), and
the entries that agree are added (divided by their weights' sum when `normalize`). Defaults are
mergekit's: density 1, gamma 0.01, no normalize, no rescale, lambda 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloylm.merge.methods.breadcrumbs import magnitude_band
from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall
from alloylm.merge.methods.task_arithmetic import task_vectors
from alloylm.merge.methods.ties import sign_consensus_merge


def breadcrumbs_ties(
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
    """base + lambda * sign-agreeing sum of the banded task vectors; float32."""
    deltas = [
        magnitude_band(delta, density, gamma, rescale=rescale)
        for delta, density, gamma in zip(
            task_vectors(base, tensors), densities, gammas, strict=True
        )
    ]
    return sign_consensus_merge(base, deltas, weights, normalize=normalize, lambda_=lambda_)


def _apply(call: MethodCall) -> Merged:
    return Merged(
        breadcrumbs_ties(
            call.base,
            call.others,
            call.weights(),
            call.densities(),
            call.model_values("gamma"),
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
