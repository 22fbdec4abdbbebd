"""Per-tensor parameter values, resolved the way mergekit resolves them.

A parameter setting is one of
- a scalar (`0.5`): the same value everywhere;
- a list of numbers (`[0, 0.5, 1]`): a *gradient* over the layers. Layer i of a slice of L layers
  sits at position p = i / (L - 1) (p = 1 when L = 1); the value is interpolated linearly between
  the list points, the list's k points being spread evenly over [0, 1];
- a list of conditional settings (`[{filter: self_attn, value: ...}, {value: 0.5}]`): the first
  entry whose filter is a substring of the tensor name (or that has no filter, or filter "*")
  gives the value.

Tensors outside the layers (embeddings, final norm, lm_head) sit at position 0, as in mergekit since
v0.1.2. mergekit <= v0.1.1 (the study's 2024 merges) put the final norm and lm_head at position 1,
i.e. they took a gradient's *last* value; `legacy_final_layers: true` reproduces that (see
`outside_position` and docs/merge.md).
Lookup order for a parameter: the model's own parameters (per-model parameters such as `weight`
and `density` only), the slice's, then the top-level `parameters`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alloylm.errors import ConfigError

# The study (Lu, Luu & Buehler 2024, arXiv 2409.03444) SLERP schedule, and its linear variant G.
STUDY_SCHEDULE: list[dict[str, Any]] = [
    {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
    {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
    {"value": 0.5},
]
VARIANT_G_SCHEDULE: list[dict[str, Any]] = [
    {"filter": "self_attn", "value": [0, 0.3, 0.5, 0.7, 1]},
    {"filter": "mlp", "value": [1, 0.7, 0.5, 0.3, 0]},
    {"value": 0.5},
]
SCHEDULE_PRESETS: dict[str, Any] = {
    "study": STUDY_SCHEDULE,
    "variant_g": VARIANT_G_SCHEDULE,
    "uniform": 0.5,
}

LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks|block|layer)\.(\d+)\.")


def schedule_preset(name: str) -> Any:
    """The t setting of a named schedule preset (study, variant_g, uniform)."""
    if name not in SCHEDULE_PRESETS:
        from alloylm.errors import did_you_mean

        raise ConfigError(
            f"unknown schedule {name!r}{did_you_mean(name, SCHEDULE_PRESETS)}",
            key="schedule",
            hint=f"known schedules: {', '.join(SCHEDULE_PRESETS)}; or give parameters: {{t: ...}}",
        )
    return SCHEDULE_PRESETS[name]


def gradient_value(points: Sequence[float], position: float) -> float:
    """Linear interpolation of evenly spaced `points` at `position` in [0, 1] (mergekit's rule)."""
    scaled = position * (len(points) - 1)
    i0 = int(scaled)
    i1 = min(len(points) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * points[i0] + frac * points[i1]


def layer_position(index: int, num_layers: int) -> float:
    """Position of layer `index` in a slice of `num_layers` layers: i / (L - 1), 1 when L = 1."""
    return index / (num_layers - 1) if num_layers > 1 else 1.0


def outside_position(tensor_name: str, legacy_final_layers: bool = False) -> float:
    """Position of a tensor outside the layers: 0 (mergekit >= v0.1.2, PR #534, plans every
    module's pre and post weights with t=0); with `legacy_final_layers`, the tensors after the layers
    (final norm, lm_head: anything but the embeddings) sit at 1, as mergekit <= v0.1.1 planned its
    post_weights with ConfigReader(t=1) (mergekit/plan.py, MergePlanner._plan)."""
    if legacy_final_layers and "embed" not in tensor_name:
        return 1.0
    return 0.0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def evaluate_setting(tensor_name: str, setting: Any, position: float) -> Any:
    """Value of one parameter setting for a tensor at a layer position; None when no filter matches."""
    if isinstance(setting, (int, float, bool, str)):
        return setting
    if isinstance(setting, (list, tuple)):
        if all(_is_number(e) for e in setting):
            return gradient_value(setting, position)
        if all(isinstance(e, (int, float, bool, str)) for e in setting):
            return setting[int(position * (len(setting) - 1))]
        for condition in setting:
            if not isinstance(condition, Mapping) or "value" not in condition:
                raise ConfigError(
                    f"a parameter list holds {condition!r}: expected numbers or {{filter, value}} entries",
                    hint="e.g. t: [{filter: self_attn, value: [0, 1]}, {value: 0.5}]",
                )
            name_filter = condition.get("filter")
            if name_filter in (None, "*") or (tensor_name and name_filter in tensor_name):
                return evaluate_setting(tensor_name, condition["value"], position)
        return None
    if isinstance(setting, Mapping) and "value" in setting:
        return evaluate_setting(tensor_name, [setting], position)
    raise ConfigError(
        f"unexpected parameter setting {setting!r}",
        hint="use a number, a list of numbers, or [{filter, value}]",
    )


def resolve_parameter(
    name: str,
    tensor_name: str,
    position: float,
    levels: Sequence[Mapping[str, Any] | None],
    default: Any = None,
) -> Any:
    """First non-None value of parameter `name` over `levels` (most specific first)."""
    for level in levels:
        if level and name in level:
            value = evaluate_setting(tensor_name, level[name], position)
            if value is not None:
                return value
    return default


def layer_index(tensor_name: str) -> int | None:
    """Index of the transformer layer a tensor belongs to, or None (embeddings, final norm...)."""
    match = LAYER_INDEX.search(tensor_name)
    return int(match.group(1)) if match else None


def rename_layer(tensor_name: str, new_index: int) -> str:
    match = LAYER_INDEX.search(tensor_name)
    if match is None:
        return tensor_name
    start, end = match.span(1)
    return tensor_name[:start] + str(new_index) + tensor_name[end:]


@dataclass(frozen=True)
class LayerRow:
    layer: int
    position: float
    attention: Any
    mlp: Any


def explain_schedule(
    setting: Any, num_layers: int, *, layer_prefix: str = "model.layers"
) -> list[LayerRow]:
    """The value an attention and an MLP tensor of each layer get from `setting`."""
    rows = []
    for i in range(num_layers):
        position = layer_position(i, num_layers)
        attention = evaluate_setting(
            f"{layer_prefix}.{i}.self_attn.q_proj.weight", setting, position
        )
        mlp = evaluate_setting(f"{layer_prefix}.{i}.mlp.up_proj.weight", setting, position)
        rows.append(LayerRow(i, position, attention, mlp))
    return rows
