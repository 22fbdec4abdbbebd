"""Apply a merge method to one tensor: resolve its parameters, call the pure method function.

The parameter names and defaults are mergekit's (t; weight, density per model; normalize,
rescale, lambda).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from alloylm.errors import ConfigError
from alloylm.merge.jobs import TensorJob
from alloylm.merge.methods.slerp import SlerpGeometry, combine, slerp_coefficients, slerp_geometry
from alloylm.merge.plan import resolve_parameter
from alloylm.registry import MERGE_METHODS

# Method-wide parameters and their defaults (None = required).
GLOBAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "slerp": {"t": None},
    "linear": {"normalize": True},
    "task_arithmetic": {"normalize": False, "lambda": 1.0},
    "ties": {"normalize": True, "lambda": 1.0},
    "dare_linear": {"normalize": False, "rescale": True, "lambda": 1.0},
    "dare_ties": {"normalize": False, "rescale": True, "lambda": 1.0},
    "model_stock": {},
}
# Per-model parameters (None = required for every model that is not the base).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "slerp": {},
    "linear": {"weight": None},
    "task_arithmetic": {"weight": None},
    "ties": {"weight": None, "density": 1.0},
    "dare_linear": {"weight": None, "density": 1.0},
    "dare_ties": {"weight": None, "density": 1.0},
    "model_stock": {},
}


@dataclass
class TensorContext:
    """One tensor's inputs plus what can be shared across sweep variants."""

    job: TensorJob
    tensors: list[torch.Tensor]  # base first when there is a base
    has_base: bool
    seed: int
    _geometry: SlerpGeometry | None = field(default=None, repr=False)

    def geometry(self) -> SlerpGeometry:
        if self._geometry is None:
            self._geometry = slerp_geometry(self.tensors[0], self.tensors[1])
        return self._geometry


def _global(method: str, job: TensorJob, parameters: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for name, default in GLOBAL_DEFAULTS[method].items():
        value = resolve_parameter(
            name, job.out_name, job.position, [job.slice_parameters, parameters], default
        )
        if value is None:
            raise ConfigError(
                f"missing required parameter {name} for {job.out_name}", key=f"parameters.{name}"
            )
        values[name] = value
    return values


def _per_model(
    method: str, job: TensorJob, parameters: dict[str, Any], has_base: bool
) -> list[dict[str, Any]]:
    rows = []
    for i, own in enumerate(job.model_parameters):
        row = {}
        for name, default in MODEL_DEFAULTS[method].items():
            value = resolve_parameter(
                name, job.sources[i], job.position, [own, job.slice_parameters, parameters], default
            )
            if value is None and not (has_base and i == 0):
                raise ConfigError(
                    f"missing required parameter {name} for model {i} at {job.out_name}",
                    key=f"parameters.{name}",
                )
            row[name] = value
        rows.append(row)
    return rows


def seeded_generator(seed: int, variant: str | None, tensor_name: str) -> torch.Generator:
    """A generator per (seed, variant, tensor): results do not depend on the processing order."""
    digest = hashlib.sha256(f"{seed}|{variant}|{tensor_name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


@dataclass
class Applied:
    tensor: torch.Tensor
    linear_fallback: bool = False
    t: float | None = None


def apply_method(
    method: str, ctx: TensorContext, parameters: dict[str, Any], variant: str | None
) -> Applied:
    """Merge one tensor with one variant's parameters; float32 result."""
    job = ctx.job
    g = _global(method, job, parameters)
    if method == "slerp":
        if len(ctx.tensors) != 2 or not ctx.has_base:
            raise ConfigError(
                f"slerp merges exactly two models, one of them base_model; got {len(ctx.tensors)}",
                key="models",
            )
        t = float(g["t"])
        geometry = ctx.geometry()
        s0, s1 = slerp_coefficients(t, geometry)
        return Applied(combine(s0, ctx.tensors[0], s1, ctx.tensors[1]), geometry.colinear, t)
    function = MERGE_METHODS.get(method)
    rows = _per_model(method, job, parameters, ctx.has_base)
    if method == "linear":
        return Applied(
            function(ctx.tensors, [r["weight"] for r in rows], normalize=bool(g["normalize"]))
        )
    base, others, rows = ctx.tensors[0], ctx.tensors[1:], rows[1:]
    if method == "model_stock":
        return Applied(function(base, others))
    return Applied(_task_vector_method(method, function, base, others, rows, g, ctx, variant))


def _task_vector_method(
    method, function, base, others: Sequence[torch.Tensor], rows, g, ctx, variant
) -> torch.Tensor:
    weights = [r["weight"] for r in rows]
    kwargs = {"normalize": bool(g["normalize"]), "lambda_": float(g["lambda"])}
    if method == "task_arithmetic":
        return function(base, others, weights, **kwargs)
    densities = [float(r["density"]) for r in rows]
    if method == "ties":
        return function(base, others, weights, densities, **kwargs)
    generator = seeded_generator(ctx.seed, variant, ctx.job.out_name)
    return function(
        base, others, weights, densities, generator, rescale=bool(g["rescale"]), **kwargs
    )


def check_method_supported(method: str) -> None:
    if method not in GLOBAL_DEFAULTS:
        raise ConfigError(
            f"merge method {method!r} has no parameter table in alloylm.merge.apply", key="method"
        )
