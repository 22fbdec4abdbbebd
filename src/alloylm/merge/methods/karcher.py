"""Karcher mean: the Riemannian (geodesic) mean of the models' directions on the unit sphere.

Karcher, "Riemannian center of mass and mollifier smoothing", Comm. Pure Appl. Math. 1977
(https://doi.org/10.1002/cpa.3160300502); for model merging as mergekit's `karcher`
(https://arxiv.org/abs/2603.04972). Every model (the base too, when one is named: the method has
no base) weighs 1/N. Each tensor is flattened and divided by its norm; starting from the
normalized arithmetic mean of the unit vectors, up to `max_iter` fixed-point steps move the mean
along the weighted sum of the log maps, until that step is shorter than `tol`. The result is the
mean direction scaled by the mean norm. Float32 arithmetic, as mergekit's.
"""

from __future__ import annotations

import torch

from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall


def karcher(
    tensors: list[torch.Tensor],
    weights: list[float] | None = None,
    *,
    max_iter: int = 10,
    tol: float = 1e-5,
) -> torch.Tensor:
    """Weighted Karcher mean of `tensors` on the sphere, times their weighted mean norm; float32."""
    tensors = [x.float() for x in tensors]
    if len(tensors) == 1:
        return tensors[0]
    alphas = weights or [1.0 / len(tensors)] * len(tensors)
    norms = [torch.linalg.vector_norm(x) for x in tensors]
    units = [
        x / n if float(n) != 0.0 else torch.zeros_like(x)
        for x, n in zip(tensors, norms, strict=True)
    ]
    kept = [i for i, n in enumerate(norms) if float(n) > tol]
    if not kept:
        return torch.zeros_like(tensors[0])
    total = sum(alphas[i] for i in kept)
    pairs = [(alphas[i] / total, units[i]) for i in kept]

    mean = torch.zeros_like(pairs[0][1])
    for alpha, unit in pairs:
        mean += alpha * unit
    length = torch.linalg.vector_norm(mean)
    mean = pairs[0][1].clone() if float(length) < tol else mean / length

    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for alpha, unit in pairs:
            cos = torch.clamp(torch.dot(mean.flatten(), unit.flatten()), -1.0, 1.0)
            theta = torch.arccos(cos)
            if float(theta) < tol:
                continue
            tangent += alpha * (theta / torch.sin(theta)) * (unit - cos * mean)
        step = torch.linalg.vector_norm(tangent)
        if float(step) < tol:
            break
        mean = torch.cos(step) * mean + torch.sin(step) * (tangent / step)
        length = torch.linalg.vector_norm(mean)
        if float(length) > tol:
            mean = mean / length
    scale = sum(alpha * norm for alpha, norm in zip(alphas, norms, strict=True))
    return scale * mean


def _apply(call: MethodCall) -> Merged:
    return Merged(
        karcher(
            call.tensors,
            max_iter=int(call.parameters["max_iter"]),
            tol=float(call.parameters["tol"]),
        )  # fmt: skip
    )


METHOD = MergeMethod(
    _apply,
    parameters={"max_iter": 10, "tol": 1e-5},
    needs_base=False,
    ignores_base=True,
    min_models=2,
)
