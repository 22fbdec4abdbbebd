"""Task arithmetic: base + weighted sum of task vectors (model - base).

Ilharco et al., "Editing models with task arithmetic", ICLR 2023, https://arxiv.org/abs/2212.04089.
The shared helpers here (task vectors, weighted mixing) are the skeleton mergekit's
"generalized task arithmetic" uses for TIES and DARE as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall


def task_vectors(base: torch.Tensor, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """model - base for each model, in float32."""
    base32 = base.float()
    return [tensor.float() - base32 for tensor in tensors]


def rescale_to_l1(original: torch.Tensor, kept: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """`kept` (a sparsified copy of `original`) scaled back to the L1 norm of `original`, as
    mergekit's `rescale` does; unchanged when either norm is below `eps`."""
    before, after = original.abs().sum(), kept.abs().sum()
    if before < eps or after < eps:
        return kept
    return kept * (before / after)


def mix_deltas(
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    *,
    sign_mask: torch.Tensor | None = None,
    normalize: bool = False,
) -> torch.Tensor:
    """Weighted sum of task vectors, optionally restricted to the elected signs (TIES).

    With `normalize`, divide by the sum of the weights that contributed at each element
    (mergekit: divisor 1 where that sum is 0, or |sum| < 1e-8 without a sign mask).
    """
    stacked = torch.stack(list(deltas))
    w = torch.tensor([float(x) for x in weights], dtype=stacked.dtype).view(
        -1, *([1] * (stacked.dim() - 1))
    )
    weighted = stacked * w
    if sign_mask is not None:
        mask = (weighted.sign() == sign_mask).to(stacked.dtype)
        mixed = (weighted * mask).sum(dim=0)
        divisor = (w * mask).sum(dim=0)
        divisor[divisor == 0] = 1.0
    else:
        mixed = weighted.sum(dim=0)
        divisor = w.sum(dim=0).expand_as(mixed).clone()
        divisor[divisor.abs() < 1e-8] = 1.0
    if normalize:
        mixed = mixed / divisor
    return mixed


def task_arithmetic(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    *,
    normalize: bool = False,
    lambda_: float = 1.0,
) -> torch.Tensor:
    """base + lambda * sum_i w_i (x_i - base); float32."""
    mixed = mix_deltas(task_vectors(base, tensors), weights, normalize=normalize)
    return base.float() + lambda_ * mixed


def _apply(call: MethodCall) -> Merged:
    return Merged(
        task_arithmetic(
            call.base,
            call.others,
            call.weights(),
            normalize=bool(call.parameters["normalize"]),
            lambda_=float(call.parameters["lambda"]),
        )  # fmt: skip
    )


METHOD = MergeMethod(
    _apply, parameters={"normalize": False, "lambda": 1.0}, model_parameters={"weight": None}
)
