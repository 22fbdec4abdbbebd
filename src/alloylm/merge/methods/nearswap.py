"""NearSwap: take the other model's value where the two are close, keep the base where they differ.

As mergekit's `nearswap` (alchemonaut, https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001).
Per entry, with base a and other b: w = clamp(t / max(|a - b|, 1e-6), 0, 1), result
w * b + (1 - w) * a. Entries closer than t are swapped to b; farther ones move toward b by t/|a-b|.
t is a distance (>= 0), not an interpolation factor: t = 0 gives the base.
"""

from __future__ import annotations

import torch

from alloylm.errors import ConfigError
from alloylm.merge.methods.spec import Merged, MergeMethod, MethodCall


def nearswap(t: float, base: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """w * other + (1 - w) * base, w = clamp(t / |base - other|, 0, 1); float32."""
    a, b = base.float(), other.float()
    weight = (t / (a - b).abs().clamp(min=1e-6)).clamp(min=0, max=1)
    return weight * b + (1 - weight) * a


def _apply(call: MethodCall) -> Merged:
    if len(call.others) != 1:
        raise ConfigError(
            f"nearswap merges one model into the base, got {len(call.others)}", key="models"
        )
    return Merged(nearswap(float(call.parameters["t"]), call.base, call.others[0]))


def _check_t(row: dict) -> str | None:
    t = row.get("t")
    if isinstance(t, int | float) and t < 0:
        return f"nearswap: t is a distance and must be >= 0, got {t:g}"
    return None


METHOD = MergeMethod(
    _apply,
    parameters={"t": None},
    row_blocks=True,
    min_models=1,
    max_models=1,
    check_values=_check_t,
)
