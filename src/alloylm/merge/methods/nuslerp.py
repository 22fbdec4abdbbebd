"""NuSLERP: SLERP between two models set by their weights, optionally of task vectors, whole or by row.

As mergekit's `nuslerp` (https://github.com/arcee-ai/mergekit, docs "NuSLERP"; spherical linear
interpolation: Shoemake, SIGGRAPH 1985, https://doi.org/10.1145/325165.325242). Two models, each
with a `weight`; the interpolation factor is t = w_2 / (w_1 + w_2) (0.5 when the weights sum to
~0). With a base model the two *task vectors* (model - base) are interpolated and added to the base
("ChipAlign"-style geometric merging of deltas). `nuslerp_flatten` (default) treats each tensor as
one vector; otherwise each row (or, with `nuslerp_row_wise`, each column) is interpolated on its
own. Vectors with cos^2 = 1 (to 1e-16) are interpolated linearly. Differs from `slerp`: no 0.9995
linear-fallback threshold, and its angle comes from float32 normalized vectors, as mergekit does.
"""

from __future__ import annotations

import torch

from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall

EPS = 1e-8


def _unit(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=eps)


def nuslerp_pair(
    t: float,
    v0: torch.Tensor,
    v1: torch.Tensor,
    *,
    flatten: bool = True,
    row_wise: bool = False,
    eps: float = EPS,
) -> torch.Tensor:
    """Spherical interpolation of v0 (t = 0) and v1 (t = 1) along the last axis; float32."""
    shape = v0.shape
    a, b = v0.float(), v1.float()
    if flatten:
        a, b = a.reshape(-1), b.reshape(-1)
    elif row_wise:
        a, b = a.transpose(0, -1), b.transpose(0, -1)
    cos = (_unit(a) * _unit(b)).sum(dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    sin_theta = torch.sin(theta)
    spherical = (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / sin_theta
    result = torch.where(colinear, (1 - t) * a + t * b, spherical)
    if not flatten and row_wise:
        result = result.transpose(0, -1)
    return result.reshape(shape)


def nuslerp_factor(weights: list[float]) -> float:
    """t = w_2 / (w_1 + w_2); 0.5 when the weights sum to ~0."""
    total = sum(weights)
    return 0.5 if abs(total) < 1e-6 else weights[1] / total


def nuslerp(
    tensors: list[torch.Tensor],
    weights: list[float],
    base: torch.Tensor | None = None,
    *,
    flatten: bool = True,
    row_wise: bool = False,
) -> torch.Tensor:
    """NuSLERP of two models (of their task vectors when `base` is given); float32."""
    if len(tensors) != 2 or len(weights) != 2:
        raise ValueError(f"nuslerp merges exactly two models, got {len(tensors)}")
    t = nuslerp_factor(weights)
    if base is None:
        return nuslerp_pair(t, tensors[0], tensors[1], flatten=flatten, row_wise=row_wise)
    b = base.float()
    delta = nuslerp_pair(
        t, tensors[0].float() - b, tensors[1].float() - b, flatten=flatten, row_wise=row_wise
    )
    return b + delta


def _apply(call: MethodCall) -> Merged:
    return Merged(
        nuslerp(
            call.non_base,
            call.non_base_weights(),
            call.base if call.has_base else None,
            flatten=bool(call.parameters["nuslerp_flatten"]),
            row_wise=bool(call.parameters["nuslerp_row_wise"]),
        )  # fmt: skip
    )


METHOD = MergeMethod(
    _apply,
    parameters={"nuslerp_flatten": True, "nuslerp_row_wise": False},
    model_parameters={"weight": None},
    needs_base=False,
    min_models=2,
    max_models=2,
)
