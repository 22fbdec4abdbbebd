"""Spherical linear interpolation of two tensors, with mergekit's semantics.

Shoemake, "Animating rotation with quaternion curves", SIGGRAPH 1985
(https://doi.org/10.1145/325165.325242); as used for model merging by mergekit
(https://github.com/arcee-ai/mergekit, merge_methods/slerp.py, Goddard et al. 2024,
https://arxiv.org/abs/2403.13257).

Per tensor: flatten, take the angle between the *normalized* copies, then combine the
*unnormalized* tensors with the sine weights. When |cos| > 0.9995 the tensors are treated as
colinear and plain linear interpolation is used instead (the "linear fallback"). t = 0 gives v0
(the base model), t = 1 gives v1. Arithmetic is float32, as in mergekit, except the angle's
dots, which are float64 (exact; mergekit sums them in float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from alloylm.errors import ConfigError
from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall

DOT_THRESHOLD = 0.9995
EPS = 1e-8


@dataclass(frozen=True)
class SlerpGeometry:
    """What SLERP needs to know about a pair of tensors, computed once and reused for many t."""

    cos_theta: float

    @property
    def colinear(self) -> bool:
        return abs(self.cos_theta) > DOT_THRESHOLD


def slerp_geometry(v0: torch.Tensor, v1: torch.Tensor, eps: float = EPS) -> SlerpGeometry:
    """Cosine of the angle between the flattened tensors (normalized copies, as mergekit).

    mergekit divides each vector by its norm only when the norm exceeds `eps`; a (near) zero
    vector is left as it is. The dot of the normalized copies equals dot(v0, v1) / (|v0| |v1|),
    which needs no normalized copies in memory. The dots are exact to ~1e-14 (see `_dots`), so
    the cosine is the true one, where mergekit's comes from float32 sums.
    """
    self0, self1, cross = _dots(v0.reshape(-1), v1.reshape(-1))
    norm0 = math.sqrt(self0)
    norm1 = math.sqrt(self1)
    cos = cross / (norm0 if norm0 > eps else 1.0) / (norm1 if norm1 > eps else 1.0)
    return SlerpGeometry(cos_theta=cos)


SPAN = 1 << 16  # elements widened at a time: 512 KiB of float64 per vector, in cache


def _dots(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """(a.a, b.b, a.b) of two long vectors, in float64, a span at a time.

    A float32 dot drifts: on a CPU with MKL, a BLAS float32 dot over 16k elements had ~5e-6
    relative error, enough to move a cosine by 7e-6 (2026-12-07, the 135M benchmark pair), and an
    embedding matrix can cross the 0.9995 threshold that way. Widened to float64, the products of
    float32 (or bfloat16) values are exact and the sums lose ~1e-16 per addition; widening a span
    while it is in cache made the three dots of a 135M model faster than float32 chunk dots
    (0.14-0.16 s against 0.59-0.62 s, one thread, idle). No whole float64 copy of a tensor is made.
    """
    totals = [0.0, 0.0, 0.0]
    for start in range(0, a.numel(), SPAN):
        span_a, span_b = a[start : start + SPAN].double(), b[start : start + SPAN].double()
        totals[0] += float(torch.dot(span_a, span_a))
        totals[1] += float(torch.dot(span_b, span_b))
        totals[2] += float(torch.dot(span_a, span_b))
    return totals[0], totals[1], totals[2]


def slerp_coefficients(t: float, geometry: SlerpGeometry) -> tuple[float, float]:
    """(s0, s1) such that the result is s0 * v0 + s1 * v1; float32 arithmetic like mergekit."""
    if geometry.colinear:
        return 1.0 - t, t
    f32 = torch.float32
    theta_0 = torch.arccos(torch.tensor(geometry.cos_theta, dtype=f32))
    sin_theta_0 = torch.sin(theta_0)
    theta_t = theta_0 * torch.tensor(t, dtype=f32)
    s0 = torch.sin(theta_0 - theta_t) / sin_theta_0
    s1 = torch.sin(theta_t) / sin_theta_0
    return float(s0), float(s1)


def combine(s0: float, v0: torch.Tensor, s1: float, v1: torch.Tensor) -> torch.Tensor:
    """s0 * v0 + s1 * v1 in float32, shape of v0 (exact copies for the coefficients 1 and 0)."""
    if s1 == 0.0 and s0 == 1.0:
        return v0.float().clone() if v0.dtype == torch.float32 else v0.float()
    if s0 == 0.0 and s1 == 1.0:
        return v1.float().clone() if v1.dtype == torch.float32 else v1.float()
    result = torch.mul(v0, s0) if v0.dtype == torch.float32 else v0.float().mul_(s0)
    return result.add_(v1, alpha=s1)


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from v0 (t = 0, the base) to v1 (t = 1); float32 result."""
    s0, s1 = slerp_coefficients(t, slerp_geometry(v0, v1))
    return combine(s0, v0, s1, v1)


def uses_linear_fallback(v0: torch.Tensor, v1: torch.Tensor) -> bool:
    """True when SLERP of these tensors falls back to linear interpolation (|cos| > 0.9995)."""
    return slerp_geometry(v0, v1).colinear


def _apply(call: MethodCall) -> Merged:
    if len(call.tensors) != 2 or not call.has_base:
        raise ConfigError(
            f"slerp merges exactly two models, one of them base_model; got {len(call.tensors)}",
            key="models",
        )
    t = float(call.parameters["t"])
    geometry = _prepare(call)
    s0, s1 = slerp_coefficients(t, geometry)
    return Merged(combine(s0, call.tensors[0], s1, call.tensors[1]), geometry.colinear, t)


def _prepare(call: MethodCall) -> SlerpGeometry:
    # the angle does not depend on t: computed once per tensor for every variant of a sweep
    # (and, for a tensor merged in row blocks, from the whole tensors before the first block)
    return call.shared("slerp_geometry", lambda: slerp_geometry(*call.tensors))


METHOD = MergeMethod(
    _apply,
    parameters={"t": None},
    default_schedule="study",
    row_blocks=True,
    prepare=_prepare,
    min_models=1,
    max_models=1,
    t_is_fraction=True,
)
