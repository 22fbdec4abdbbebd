"""Arcee Fusion: take the other model's value only where it changed most, by an importance score.

As mergekit's `arcee_fusion` (Arcee AI, https://www.arcee.ai/blog/meet-mergekit-v0-1-arcee-fusion-expanded-model-support-multi-gpu-acceleration;
https://github.com/arcee-ai/mergekit). Two models, the base and one other. Per entry, the importance
is |x - b| times KL(softmax(x) || softmax(b)) of its row (the last axis; eps 1e-8 added to both
distributions). Entries whose importance reaches median + 1.5 (Q3 - Q1) take x, the others keep b.
The quartiles are the sorted importances at index floor(q (n - 1)); above 1,000,000 entries they
come from 1,000,000 entries drawn with replacement (from an explicit generator: mergekit draws from
torch's global one, so on such a tensor the two agree only in distribution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alloylm.errors import ConfigError
from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall

SAMPLE_SIZE = 1_000_000


def importance(model: torch.Tensor, base: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """|x - b| * KL(softmax(x) || softmax(b)) along the last axis."""
    x, b = model.float(), base.float()
    p = F.softmax(x, dim=-1) + eps
    q = F.softmax(b, dim=-1) + eps
    return (x - b).abs() * torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)


def fusion_threshold(
    scores: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """median + 1.5 * (Q3 - Q1) of the scores (sampled above SAMPLE_SIZE entries)."""
    flat = scores.reshape(-1)
    if flat.numel() > SAMPLE_SIZE:
        flat = flat[torch.randint(flat.numel(), (SAMPLE_SIZE,), generator=generator)]
    ordered = torch.sort(flat).values
    at = (torch.tensor([0.25, 0.5, 0.75]) * (ordered.numel() - 1)).long()
    q1, median, q3 = ordered[at]
    return median + 1.5 * (q3 - q1)


def arcee_fusion(
    base: torch.Tensor, model: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """b + (x - b) where importance >= threshold; float32."""
    scores = importance(model, base)
    mask = (scores >= fusion_threshold(scores, generator)).float()
    b = base.float()
    return b + (model.float() - b) * mask


def _apply(call: MethodCall) -> Merged:
    if len(call.others) != 1:
        raise ConfigError(
            f"arcee_fusion merges one model into the base, got {len(call.others)}", key="models"
        )
    return Merged(arcee_fusion(call.base, call.others[0], call.generator()))


METHOD = MergeMethod(_apply, min_models=1, max_models=1)
