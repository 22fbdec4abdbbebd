"""Weighted average of models ("model soups").

Wortsman et al., "Model soups: averaging weights of multiple fine-tuned models improves accuracy
without increasing inference time", ICML 2022, https://arxiv.org/abs/2203.05482.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall


def linear(
    tensors: Sequence[torch.Tensor], weights: Sequence[float], *, normalize: bool = True
) -> torch.Tensor:
    """sum_i w_i x_i, divided by sum_i w_i when `normalize` (mergekit's default); float32."""
    if len(tensors) != len(weights):
        raise ValueError(f"linear: {len(tensors)} tensors but {len(weights)} weights")
    result = torch.zeros_like(tensors[0], dtype=torch.float32)
    for tensor, weight in zip(tensors, weights, strict=False):
        result.add_(tensor.float(), alpha=float(weight))
    if normalize:
        total = float(sum(weights))
        if total != 0.0:
            result.div_(total)
    return result


def _apply(call: MethodCall) -> Merged:
    weights = [row["weight"] for row in call.per_model]
    return Merged(linear(call.tensors, weights, normalize=bool(call.parameters["normalize"])))


METHOD = MergeMethod(
    _apply,
    parameters={"normalize": True},
    model_parameters={"weight": None},
    needs_base=False,
    ignores_base=True,  # the base, when named, is averaged with its own weight
    row_blocks=True,  # elementwise
)
