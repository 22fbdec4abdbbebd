"""DARE: drop task-vector entries at random, rescale the survivors, then add (or TIES-merge).

Yu et al., "Language models are super Mario: absorbing abilities from homologous models as a
free lunch", ICML 2024, https://arxiv.org/abs/2311.03099. As in mergekit's `dare_linear` and
`dare_ties`, survivors are rescaled so the task vector keeps its L1 norm (`rescale`), and
`normalize` is off by default. The drops come from an explicit `torch.Generator`, so a merge with
the same seed is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall
from alloylm.merge.methods.task_arithmetic import mix_deltas, rescale_to_l1, task_vectors
from alloylm.merge.methods.ties import sign_consensus_merge


def random_drop(
    delta: torch.Tensor, density: float, generator: torch.Generator, *, rescale: bool = True
) -> torch.Tensor:
    """Keep each entry with probability `density`; rescale to the original L1 norm."""
    if density >= 1.0:
        return delta
    mask = torch.bernoulli(torch.full_like(delta, float(density)), generator=generator)
    kept = delta * mask
    return rescale_to_l1(delta, kept) if rescale else kept


def _dropped(base, tensors, densities, generator, rescale):
    return [
        random_drop(d, rho, generator, rescale=rescale)
        for d, rho in zip(task_vectors(base, tensors), densities, strict=False)
    ]


def dare_linear(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    densities: Sequence[float],
    generator: torch.Generator,
    *,
    rescale: bool = True,
    normalize: bool = False,
    lambda_: float = 1.0,
) -> torch.Tensor:
    """base + lambda * sum_i w_i drop(x_i - base); float32."""
    deltas = _dropped(base, tensors, densities, generator, rescale)
    return base.float() + lambda_ * mix_deltas(deltas, weights, normalize=normalize)


def dare_ties(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    densities: Sequence[float],
    generator: torch.Generator,
    *,
    rescale: bool = True,
    normalize: bool = False,
    lambda_: float = 1.0,
) -> torch.Tensor:
    """DARE drops, then TIES sign election and disjoint merge; float32."""
    deltas = _dropped(base, tensors, densities, generator, rescale)
    return sign_consensus_merge(base, deltas, weights, normalize=normalize, lambda_=lambda_)


def _applier(function: Callable[..., torch.Tensor]) -> Callable[[MethodCall], Merged]:
    def apply(call: MethodCall) -> Merged:
        return Merged(
            function(
                call.base,
                call.others,
                call.weights(),
                call.densities(),
                call.generator(),
                rescale=bool(call.parameters["rescale"]),
                normalize=bool(call.parameters["normalize"]),
                lambda_=float(call.parameters["lambda"]),
            )  # fmt: skip
        )

    return apply


_PARAMETERS = {"normalize": False, "rescale": True, "lambda": 1.0}
_MODEL_PARAMETERS = {"weight": None, "density": 1.0}
LINEAR = MergeMethod(_applier(dare_linear), _PARAMETERS, _MODEL_PARAMETERS)
TIES = MergeMethod(_applier(dare_ties), _PARAMETERS, _MODEL_PARAMETERS)
