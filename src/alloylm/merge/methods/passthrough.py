"""Passthrough: copy one model's tensors, optionally scaled; with `slices`, stack layer ranges.

As mergekit's `passthrough` (https://github.com/arcee-ai/mergekit#passthrough). Each output tensor
comes from exactly one model: `models: [one]` copies it, and `slices` whose sources name one model
each build a model of another depth from layer ranges of one or several models (a
"frankenmerge"; e.g. Goddard et al. 2024, https://arxiv.org/abs/2403.13257, section 3). A
per-model `scale` multiplies the tensors (1: unchanged).
"""

from __future__ import annotations

import torch

from alloylm.errors import ConfigError
from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall


def passthrough(tensor: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The tensor (times `scale`); float32."""
    return tensor.float() if scale == 1.0 else tensor.float() * scale


def _apply(call: MethodCall) -> Merged:
    if len(call.tensors) != 1:
        raise ConfigError(
            f"passthrough takes one model per tensor, got {len(call.tensors)}",
            key="models",
            hint="list one model, or slices with one source each",
        )
    return Merged(passthrough(call.tensors[0], float(call.per_model[0]["scale"])))


METHOD = MergeMethod(
    _apply,
    model_parameters={"scale": 1.0},
    needs_base=False,
    ignores_base=True,
    row_blocks=True,
    max_models=1,
)
