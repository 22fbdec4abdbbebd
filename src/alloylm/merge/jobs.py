"""The list of output tensors of a merge: where each comes from and at which layer position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alloylm.errors import ConfigError
from alloylm.merge.config import MergeSettings
from alloylm.merge.plan import layer_index, layer_position, outside_position, rename_layer


@dataclass(frozen=True)
class TensorJob:
    out_name: str
    sources: tuple[str, ...]  # input tensor name in each model (same order as the model list)
    position: float  # layer position for gradients; outside the layers see plan.outside_position
    slice_parameters: dict[str, Any] | None = None
    model_parameters: tuple[dict[str, Any] | None, ...] = ()
    # the models (indices in the merge's model list) that `sources` name; None: all of them (a
    # slice of a passthrough "frankenmerge" takes one model, another slice another)
    inputs: tuple[int, ...] | None = None

    def inputs_of(self, items: list[Any]) -> list[Any]:
        """The entries of a per-model list (readers, folders) that this job reads."""
        return list(items) if self.inputs is None else [items[i] for i in self.inputs]


def _order_key(name: str) -> tuple[int, int, str]:
    index = layer_index(name)
    if index is not None:
        return (1, index, name)
    return (0 if "embed" in name else 2, 0, name)


def build_jobs(
    settings: MergeSettings, names: list[str], layers: int | None, model_ids: list[str]
) -> list[TensorJob]:
    """Jobs in output order (embeddings, layers in order, the rest). `names`: the base's tensors."""
    ordered = sorted(names, key=_order_key)
    n_models = len(model_ids)
    if not settings.slices:
        per_model = tuple(_model_parameters(settings, model_ids))
        if layers is None:
            layers = 1 + max((layer_index(n) or 0) for n in names)
        return [
            TensorJob(
                out_name=name,
                sources=(name,) * n_models,
                position=outside_position(name, settings.legacy_final_layers)
                if layer_index(name) is None
                else layer_position(layer_index(name), layers),
                model_parameters=per_model,
            )
            for name in ordered
        ]
    return _slice_jobs(settings, ordered, model_ids)


def _model_parameters(settings: MergeSettings, model_ids: list[str]) -> list[dict[str, Any] | None]:
    by_model = {m.model: m.parameters for m in settings.model_inputs()}
    return [by_model.get(model) for model in model_ids]


def _slice_jobs(
    settings: MergeSettings, ordered: list[str], model_ids: list[str]
) -> list[TensorJob]:
    templates = [n for n in ordered if layer_index(n) == 0]
    outside = [n for n in ordered if layer_index(n) is None]
    pre = [n for n in outside if "embed" in n]
    post = [n for n in outside if "embed" not in n]
    jobs: list[TensorJob] = []
    first, last = settings.slices[0], settings.slices[-1]
    jobs += _outside_jobs(pre, settings, first, model_ids, 0)
    out_layer = 0
    for number, slice_ in enumerate(settings.slices):
        sources, inputs = _slice_sources(settings, slice_, model_ids, number)
        lengths = {s.layer_range[1] - s.layer_range[0] for s in sources}
        if len(lengths) != 1:
            raise ConfigError(
                "all sources of a slice must have the same number of layers", key=f"slices.{number}"
            )
        length = lengths.pop()
        for offset in range(length):
            for template in templates:
                jobs.append(
                    TensorJob(
                        out_name=rename_layer(template, out_layer),
                        sources=tuple(
                            rename_layer(template, s.layer_range[0] + offset) for s in sources
                        ),
                        position=layer_position(offset, length),
                        slice_parameters=slice_.parameters,
                        model_parameters=tuple(s.parameters for s in sources),
                        inputs=inputs,
                    )
                )
            out_layer += 1
    jobs += _outside_jobs(post, settings, last, model_ids, len(settings.slices) - 1)
    return jobs


def _slice_sources(settings: MergeSettings, slice_, model_ids: list[str], number: int):
    """The slice's sources in the merge's model order (base first), and their model indices
    (None when the slice takes every model)."""
    by_model = {s.model: s for s in slice_.sources}
    if len(by_model) != len(slice_.sources):
        raise ConfigError(f"slice {number} names a model twice", key=f"slices.{number}.sources")
    if settings.base_model and settings.base_model not in by_model:
        raise ConfigError(
            f"slice {number} does not take the base model {settings.base_model}",
            key=f"slices.{number}.sources",
            hint="every slice of a merge with a base_model takes layers of the base too",
        )
    inputs = tuple(i for i, m in enumerate(model_ids) if m in by_model)
    sources = [by_model[model_ids[i]] for i in inputs]
    return sources, (None if len(inputs) == len(model_ids) else inputs)


def _outside_jobs(
    names: list[str], settings: MergeSettings, slice_, model_ids: list[str], number: int
) -> list[TensorJob]:
    """Embeddings (from the first slice's models) or final norm and head (the last slice's)."""
    sources, inputs = _slice_sources(settings, slice_, model_ids, number)
    return [
        TensorJob(
            name,
            (name,) * len(sources),
            outside_position(name, settings.legacy_final_layers),
            slice_.parameters,
            tuple(s.parameters for s in sources),
            inputs,
        )
        for name in names
    ]


def output_layers(settings: MergeSettings) -> int | None:
    """Number of layers of the output when slices change it, else None."""
    if not settings.slices:
        return None
    return sum(s.sources[0].layer_range[1] - s.sources[0].layer_range[0] for s in settings.slices)
