"""What a merge method module declares about itself, and what it receives for one tensor.

A method module holds a pure function of tensors (with its paper link and unit tests) and, at its
end, `METHOD = MergeMethod(...)`: its parameters with their defaults, whether it needs a base model,
and `apply`, which turns a `MethodCall` into the merged tensor. `registry.MERGE_METHODS` points at
that `METHOD`; the engine, the config check and `alloy ls` read everything else from it, so adding
a method is its file, its test and one table line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from alloylm.errors import ConfigError
from alloylm.registry import MERGE_METHODS

if TYPE_CHECKING:  # the declarations are read by config checks that must not import torch
    import torch


@dataclass
class MethodCall:
    """One tensor's inputs, with the parameters resolved for that tensor (mergekit's names)."""

    tensors: list[torch.Tensor]  # base first when there is a base
    has_base: bool
    parameters: dict[str, Any]  # the method-wide parameters (`MergeMethod.parameters`)
    per_model: list[dict[str, Any]]  # one row per tensor (`MergeMethod.model_parameters`)
    # a torch.Generator seeded per (seed, sweep variant, tensor name), for random methods
    generator: Callable[[], torch.Generator]
    # shared by the variants of a sweep for this tensor: work that does not depend on parameters
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def others(self) -> list[torch.Tensor]:
        """The models merged into the base (all but the first tensor)."""
        return self.tensors[1:]

    def weights(self) -> list[float]:
        """`weight` of each model merged into the base."""
        return [float(row["weight"]) for row in self.per_model[1:]]

    def densities(self) -> list[float]:
        return [float(row["density"]) for row in self.per_model[1:]]

    def model_values(self, name: str) -> list[float]:
        """Per-model parameter `name` of each model merged into the base."""
        return [float(row[name]) for row in self.per_model[1:]]

    @property
    def non_base(self) -> list[torch.Tensor]:
        """The models that are not the base: all tensors when the merge has no base."""
        return self.tensors[1:] if self.has_base else list(self.tensors)

    def non_base_weights(self) -> list[float]:
        """`weight` of each non-base model (every model when the merge has no base)."""
        rows = self.per_model[1:] if self.has_base else self.per_model
        return [float(row["weight"]) for row in rows]

    def shared(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


@dataclass
class Merged:
    tensor: torch.Tensor
    linear_fallback: bool = False  # SLERP treated the pair as colinear
    t: float | None = None  # the interpolation factor used, for the merge report


@dataclass(frozen=True)
class MergeMethod:
    apply: Callable[[MethodCall], Merged]
    # method-wide parameters and their defaults (None: required)
    parameters: dict[str, Any] = field(default_factory=dict)
    # per-model parameters (None: required for every model that is not the base)
    model_parameters: dict[str, Any] = field(default_factory=dict)
    needs_base: bool = True
    # the schedule preset that fills `t` when a config gives neither `schedule` nor `t`
    default_schedule: str | None = None
    # True when `apply` on the same rows of every tensor gives those rows of the result, once
    # `prepare` (called with the whole tensors) has put any whole-tensor statistic in call.cache
    # (via `call.shared`). The engine then merges an embedding-sized tensor a block of rows at a
    # time into its output dtype, without a float32 result the size of the tensor.
    row_blocks: bool = False
    prepare: Callable[[MethodCall], None] | None = None
    # how many models besides the base the method merges (checked before any tensor is read)
    min_models: int = 1
    max_models: int | None = None
    # True when the base model, if one is named, is merged as one more model (karcher, linear)
    ignores_base: bool = False
    # True when `t` is an interpolation factor (SLERP): a t outside [0, 1] extrapolates, and the
    # merge warns (nearswap's t is a distance, any value >= 0 is meant)
    t_is_fraction: bool = False
    # a check of parameter values that needs no tensor, called with the method-wide parameters
    # and again with each model's own over them (constants only, defaults filled in): the
    # problem in words, or None (DELLA's density +/- epsilon in (0, 1), nearswap's t >= 0)
    check_values: Callable[[dict[str, Any]], str | None] | None = None


def merge_method(name: str) -> MergeMethod:
    """The declaration of the method registered as `name` (its module's `METHOD`)."""
    method = MERGE_METHODS.get(name)
    if not isinstance(method, MergeMethod):
        raise ConfigError(
            f"merge method {name!r} is registered with {MERGE_METHODS.entry(name).target}, "
            "which is not a MergeMethod",
            key="method",
            hint="point its registry line at the module's METHOD (see alloylm/merge/methods/spec.py)",
        )
    return method
