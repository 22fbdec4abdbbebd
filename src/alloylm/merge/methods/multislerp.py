"""Multi-SLERP: a weighted spherical mean of any number of models (barycentric, on the hypersphere).

Goddard, "Multi-SLERP", 2025, https://goddard.blog/posts/multislerp-wow-what-a-cool-idea; as
mergekit's `multislerp`. Each tensor (a task vector when a base is given) is flattened and put on
the unit sphere; the weighted mean of the unit vectors, normalized, is the tangent point; the
weighted mean of the tangent projections is mapped back with the exponential map, and the result
is scaled by the weighted mean of the norms. `normalize_weights` (default) makes the weights sum
to 1. One model gives that model; two antipodal models with balanced weights fall back to linear
interpolation, more than two are refused.
"""

from __future__ import annotations

import torch

from alloylm.errors import ConfigError
from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall


def multislerp(
    tensors: list[torch.Tensor],
    weights: list[float],
    base: torch.Tensor | None = None,
    *,
    normalize_weights: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Weighted spherical mean of `tensors` (of their task vectors when `base` is given); float32."""
    if len(tensors) == 1:
        return tensors[0].float()
    shape = tensors[0].shape
    stacked = torch.stack([x.float() for x in tensors])
    if base is not None:
        stacked -= base.float()
    flat = stacked.view(len(tensors), -1)
    w = torch.tensor([float(x) for x in weights], dtype=torch.float32)
    if normalize_weights:
        w = w / w.sum()
    norms = torch.norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * w.view(-1, 1)).sum(0)
    mean_norm = torch.norm(mean)
    if mean_norm < eps:
        if len(tensors) != 2:
            raise ConfigError(
                "multislerp: the weighted sum of the models' unit vectors is zero "
                "(antipodal models with balancing weights)",
                key="parameters.weight",
                hint="give the models different weights",
            )
        result = (stacked[0] * w[0] + stacked[1] * w[1]).view(shape)
        return result + base.float() if base is not None else result
    mean = mean / mean_norm
    tangents = units - (units * mean).sum(-1, keepdim=True) * mean
    tangent = (tangents * w.view(-1, 1)).sum(0)
    length = torch.norm(tangent) + eps
    on_sphere = mean * torch.cos(length) + tangent * (torch.sin(length) / length)
    result = (on_sphere * (norms.squeeze(-1) * w).sum()).view(shape)
    return result + base.float() if base is not None else result


def _apply(call: MethodCall) -> Merged:
    return Merged(
        multislerp(
            call.non_base,
            call.non_base_weights(),
            call.base if call.has_base else None,
            normalize_weights=bool(call.parameters["normalize_weights"]),
            eps=float(call.parameters["eps"]),
        )  # fmt: skip
    )


METHOD = MergeMethod(
    _apply,
    parameters={"normalize_weights": True, "eps": 1e-8},
    model_parameters={"weight": None},
    needs_base=False,
)
