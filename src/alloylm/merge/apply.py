"""Apply a merge method to one tensor: resolve its parameters, call the method's `apply`.

The parameter names and defaults are mergekit's (t; weight, density per model; normalize,
rescale, lambda); each method declares its own in its module (`METHOD`, see methods/spec.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable
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
            if value is None and not (has_base and i == 0 and not method.ignores_base):
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


def _method_call(
    method: MergeMethod, ctx: TensorContext, parameters: dict[str, Any], variant: str | None
) -> MethodCall:
    job = ctx.job
    return MethodCall(
        tensors=ctx.tensors,
        has_base=ctx.has_base,
        parameters=_global(method, job, parameters),
        per_model=_per_model(method, job, parameters, ctx.has_base),
        generator=lambda: seeded_generator(ctx.seed, variant, job.out_name),
        cache=ctx.shared,
    )


def apply_method(
    name: str, ctx: TensorContext, parameters: dict[str, Any], variant: str | None
) -> Merged:
    """Merge one tensor with one variant's parameters; float32 result."""
    method = merge_method(name)
    return method.apply(_method_call(method, ctx, parameters, variant))


ROW_BLOCK_ELEMENTS = 1 << 20  # 4 MB of float32 per block


def merges_in_row_blocks(name: str, ndim: int) -> bool:
    """Whether method `name` can merge a tensor of `ndim` dimensions a block of rows at a time."""
    return merge_method(name).row_blocks and ndim >= 1


def apply_method_in_row_blocks(
    name: str,
    ctx: TensorContext,
    parameters: dict[str, Any],
    variant: str | None,
    out_dtype: torch.dtype,
    block_elements: int | None = None,
    map_blocks: Callable[..., Iterable[Any]] = map,
    out: torch.Tensor | None = None,
) -> Merged:
    """`apply_method`, a block of rows at a time, written into a tensor of `out_dtype`: the same
    values (elementwise arithmetic, one rounding to `out_dtype`) without the float32 result.

    `ctx.tensors` may be in any floating dtype: `prepare` sees them whole as they are, `apply`
    sees each block widened to float32 (exact), so no float32 copy of a whole tensor is made.
    `map_blocks` (a thread pool's `map`) may merge blocks concurrently: each writes its own rows.
    `out`: a tensor of that shape and dtype to write into (a buffer already written out), instead
    of a new one: a sweep reuses one for the next variant rather than map fresh pages."""
    method = merge_method(name)
    whole = _method_call(method, ctx, parameters, variant)
    if method.prepare is not None:
        method.prepare(whole)
    first = ctx.tensors[0]
    if out is None or out.shape != first.shape or out.dtype != out_dtype:
        out = torch.empty(first.shape, dtype=out_dtype)
    per_row = first[0].numel() if first.ndim > 1 else 1
    rows = max(1, (block_elements or ROW_BLOCK_ELEMENTS) // per_row)

    def merge_block(start: int) -> tuple[bool, float | None]:
        block = [tensor[start : start + rows].float() for tensor in ctx.tensors]
        merged = method.apply(dataclasses.replace(whole, tensors=block))
        out[start : start + rows] = merged.tensor
        return merged.linear_fallback, merged.t  # the same for every block (from `whole`)

    flags = list(map_blocks(merge_block, range(0, first.shape[0], rows)))
    assert flags, "a tensor with no rows"
    return Merged(out, *flags[-1])
