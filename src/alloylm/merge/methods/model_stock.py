"""Model Stock: move from the base toward the average of fine-tuned models by an angle-set ratio.

Jang et al., "Model Stock: all we need is just a few fine-tuned models", ECCV 2024,
https://arxiv.org/abs/2403.19522. As in mergekit's `model_stock`: cos(theta) is the mean pairwise
cosine between the task vectors (whole tensor), t = N cos / (1 + (N - 1) cos), and the result is
t * mean(models) + (1 - t) * base. Needs at least two models besides the base.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall
from alloylm.merge.methods.task_arithmetic import task_vectors


def mean_pairwise_cosine(deltas: Sequence[torch.Tensor]) -> float:
    cosines = []
    for i in range(len(deltas)):
        for j in range(i + 1, len(deltas)):
            a, b = deltas[i].reshape(-1), deltas[j].reshape(-1)
            norms = float(a.norm() * b.norm())
            cosines.append(max(-1.0, min(1.0, float(torch.dot(a, b)) / max(norms, 1e-6))))
    return sum(cosines) / len(cosines)


def model_stock(base: torch.Tensor, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Model Stock interpolation of the models' average with the base; float32."""
    if len(tensors) < 2:
        raise ValueError("model_stock needs at least two models besides the base")
    cos = mean_pairwise_cosine(task_vectors(base, tensors))
    n = len(tensors)
    t = n * cos / (1 + (n - 1) * cos)
    average = torch.stack([x.float() for x in tensors]).mean(dim=0)
    return t * average + (1 - t) * base.float()


def _apply(call: MethodCall) -> Merged:
    return Merged(model_stock(call.base, call.others))


METHOD = MergeMethod(_apply, min_models=2)
