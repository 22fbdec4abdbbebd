"""DELLA: drop task-vector entries at random, the smaller ones more often (MAGPRUNE), then merge.

Deep, Bhatt, Vajjala & Chakraborty, "DELLA-Merging: reducing interference in model merging
through magnitude-based sampling", 2024, https://arxiv.org/abs/2406.11617. As mergekit's `della`
(TIES sign election, normalized) and `della_linear` (a plain weighted sum): within each row of a
task vector (a 1-D tensor is one row), entries are ranked by magnitude; the entry of rank r
(0 = smallest, n - 1 = largest) is kept with probability p = density - epsilon + 2 epsilon r/(n-1),
and the kept vector is rescaled to the L1 norm of the original (`rescale`, on by default).
density +/- epsilon must lie in (0, 1). The drops come from an explicit `torch.Generator`: a seed
gives the same merge, and the same seed gives mergekit's drops for a tensor (its `torch.bernoulli`
on the global generator, seeded alike).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from alloylm.errors import ConfigError
from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall
from alloylm.merge.methods.task_arithmetic import mix_deltas, rescale_to_l1, task_vectors
from alloylm.merge.methods.ties import sign_consensus_merge


def epsilon_problem(density: float, epsilon: float) -> str | None:
    """Why (density, epsilon) cannot be sampled, or None."""
    if density >= 1.0 or density <= 0.0:
        return None
    if density + epsilon >= 1 or density - epsilon <= 0:
        return (
            f"della: density {density:g} +/- epsilon {epsilon:g} must lie in (0, 1) "
            "(the keep probabilities of the smallest and largest entries)"
        )
    return None


def magprune(
    delta: torch.Tensor,
    density: float,
    epsilon: float,
    generator: torch.Generator,
    *,
    rescale: bool = True,
) -> torch.Tensor:
    """Keep each entry with a probability rising with its magnitude rank in its row."""
    if density >= 1.0:
        return delta
    if density <= 0.0:
        return torch.zeros_like(delta)
    problem = epsilon_problem(density, epsilon)
    if problem:
        raise ConfigError(problem, key="parameters.epsilon", hint="e.g. density 0.5, epsilon 0.1")
    rows = delta.unsqueeze(0) if delta.dim() < 2 else delta
    ranks = torch.argsort(torch.argsort(rows.abs(), dim=1), dim=1).float() + 1
    low = ranks.min(dim=1, keepdim=True).values
    high = ranks.max(dim=1, keepdim=True).values
    position = ((ranks - low) / (high - low)).clamp(0, 1)
    keep = torch.bernoulli((density - epsilon) + position * 2 * epsilon, generator=generator)
    kept = rows * keep
    if rescale:
        kept = rescale_to_l1(rows, kept)
    return kept.reshape(delta.shape)


def _pruned(base, tensors, densities, epsilons, generator, rescale) -> list[torch.Tensor]:
    return [
        magprune(delta, density, epsilon, generator, rescale=rescale)
        for delta, density, epsilon in zip(
            task_vectors(base, tensors), densities, epsilons, strict=True
        )
    ]


def della(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    densities: Sequence[float],
    epsilons: Sequence[float],
    generator: torch.Generator,
    *,
    rescale: bool = True,
    normalize: bool = True,
    lambda_: float = 1.0,
) -> torch.Tensor:
    """MAGPRUNE drops, then TIES sign election and disjoint merge; float32."""
    deltas = _pruned(base, tensors, densities, epsilons, generator, rescale)
    return sign_consensus_merge(base, deltas, weights, normalize=normalize, lambda_=lambda_)


def della_linear(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    densities: Sequence[float],
    epsilons: Sequence[float],
    generator: torch.Generator,
    *,
    rescale: bool = True,
    normalize: bool = False,
    lambda_: float = 1.0,
) -> torch.Tensor:
    """base + lambda * sum_i w_i magprune(x_i - base); float32."""
    deltas = _pruned(base, tensors, densities, epsilons, generator, rescale)
    return base.float() + lambda_ * mix_deltas(deltas, weights, normalize=normalize)


def _applier(function: Callable[..., torch.Tensor]) -> Callable[[MethodCall], Merged]:
    def apply(call: MethodCall) -> Merged:
        return Merged(
            function(
                call.base,
                call.others,
                call.weights(),
                call.densities(),
                call.model_values("epsilon"),
                call.generator(),
                rescale=bool(call.parameters["rescale"]),
                normalize=bool(call.parameters["normalize"]),
                lambda_=float(call.parameters["lambda"]),
            )  # fmt: skip
        )

    return apply


def _check_values(row: dict[str, Any]) -> str | None:
    density, epsilon = row.get("density"), row.get("epsilon")
    if isinstance(density, int | float) and isinstance(epsilon, int | float):
        return epsilon_problem(float(density), float(epsilon))
    return None  # a gradient or a filtered list: checked per tensor when merging


_MODEL_PARAMETERS = {"weight": None, "density": 1.0, "epsilon": 0.15}
DELLA = MergeMethod(
    _applier(della),
    {"normalize": True, "rescale": True, "lambda": 1.0},
    _MODEL_PARAMETERS,
    check_values=_check_values,
)
LINEAR = MergeMethod(
    _applier(della_linear),
    {"normalize": False, "rescale": True, "lambda": 1.0},
    _MODEL_PARAMETERS,
    check_values=_check_values,
)
