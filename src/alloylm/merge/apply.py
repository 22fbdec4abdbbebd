"""Apply a merge method to one tensor: resolve its parameters, call the method's `apply`.

The parameter names and defaults are mergekit's (t; weight, density per model; normalize,
rescale, lambda); each method declares its own in its module (`METHOD`, see methods/spec.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch

from alloylm.errors import ConfigError
from alloylm.merge.jobs import TensorJob
from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall, merge_method
from alloylm.merge.plan import resolve_parameter


@dataclass
class TensorContext:
    """One tensor's inputs plus what can be shared across sweep variants."""

    job: TensorJob
    tensors: list[torch.Tensor]  # base first when there is a base
    has_base: bool
    seed: int
    shared: dict[str, Any] = field(default_factory=dict, repr=False)


def _global(method: MergeMethod, job: TensorJob, parameters: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for name, default in method.parameters.items():
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
    method: MergeMethod, job: TensorJob, parameters: dict[str, Any], has_base: bool
) -> list[dict[str, Any]]:
    rows = []
    for i, own in enumerate(job.model_parameters):
        row = {}
        for name, default in method.model_parameters.items():
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


def apply_method(
    name: str, ctx: TensorContext, parameters: dict[str, Any], variant: str | None
) -> Merged:
    """Merge one tensor with one variant's parameters; float32 result."""
    method = merge_method(name)
    job = ctx.job
    call = MethodCall(
        tensors=ctx.tensors,
        has_base=ctx.has_base,
        parameters=_global(method, job, parameters),
        per_model=_per_model(method, job, parameters, ctx.has_base),
        generator=lambda: seeded_generator(ctx.seed, variant, job.out_name),
        cache=ctx.shared,
    )
    return method.apply(call)
