"""Per-tensor parameters: mergekit's gradient rule, filters and lookup order, by hand."""

from __future__ import annotations

import pytest

from alloylm.errors import ConfigError
from alloylm.merge.plan import (
    STUDY_SCHEDULE,
    VARIANT_G_SCHEDULE,
    evaluate_setting,
    explain_schedule,
    gradient_value,
    layer_index,
    layer_position,
    rename_layer,
    resolve_parameter,
    schedule_preset,
)

ATTN = "model.layers.{}.self_attn.q_proj.weight"
MLP = "model.layers.{}.mlp.down_proj.weight"


def test_layer_position_is_index_over_layers_minus_one():
    assert layer_position(0, 30) == 0.0
    assert layer_position(29, 30) == 1.0
    assert layer_position(9, 30) == pytest.approx(9 / 29)
    assert layer_position(0, 1) == 1.0  # mergekit: a one-layer slice sits at 1


def test_gradient_interpolates_between_evenly_spread_points():
    assert gradient_value([0, 1], 0.25) == pytest.approx(0.25)
    assert gradient_value([0, 0.5, 0.3, 0.7, 1], 0.5) == pytest.approx(0.3)
    assert gradient_value([0, 0.5, 0.3, 0.7, 1], 0.375) == pytest.approx(0.4)  # halfway 0.5 -> 0.3
    assert gradient_value([0, 0.5, 0.3, 0.7, 1], 1.0) == 1


@pytest.mark.parametrize(
    ("layers", "layer", "attention", "mlp"),
    [
        # 30 layers (SmolLM2-135M): layer 9 at 9/29 -> scaled 36/29, between points 1 and 2, frac 7/29
        (30, 0, 0.0, 1.0),
        (30, 9, 0.5 - 0.2 * 7 / 29, 0.5 + 0.2 * 7 / 29),
        (30, 15, 0.3 + 0.4 * 2 / 29, 0.7 - 0.4 * 2 / 29),  # 60/29 -> frac 2/29 past point 2
        (30, 29, 1.0, 0.0),
        # 32 layers (Llama-3.1-8B, Mistral-7B): layer 8 at 32/31 -> frac 1/31 past point 1
        (32, 8, 0.5 - 0.2 / 31, 0.5 + 0.2 / 31),
        (32, 16, 0.3 + 0.4 * 2 / 31, 0.7 - 0.4 * 2 / 31),  # 64/31
        (32, 24, 0.7 + 0.3 * 3 / 31, 0.3 - 0.3 * 3 / 31),  # 96/31 -> frac 3/31 past point 3
        (32, 31, 1.0, 0.0),
    ],
)
def test_study_schedule_per_layer(layers, layer, attention, mlp):
    position = layer_position(layer, layers)
    assert evaluate_setting(ATTN.format(layer), STUDY_SCHEDULE, position) == pytest.approx(
        attention
    )
    assert evaluate_setting(MLP.format(layer), STUDY_SCHEDULE, position) == pytest.approx(mlp)


def test_rest_of_the_tensors_get_the_default():
    for name in (
        "model.layers.3.input_layernorm.weight",
        "model.embed_tokens.weight",
        "model.norm.weight",
    ):
        assert evaluate_setting(name, STUDY_SCHEDULE, 0.4) == 0.5


def test_variant_g_is_linear_and_mirrored():
    rows = explain_schedule(VARIANT_G_SCHEDULE, 5)
    assert [r.attention for r in rows] == pytest.approx([0, 0.3, 0.5, 0.7, 1])
    assert [r.mlp for r in rows] == pytest.approx([1, 0.7, 0.5, 0.3, 0])


def test_first_matching_filter_wins_and_star_matches_all():
    setting = [
        {"filter": "mlp", "value": 0.1},
        {"filter": "mlp.up", "value": 0.9},
        {"filter": "*", "value": 0.4},
    ]
    assert evaluate_setting("model.layers.0.mlp.up_proj.weight", setting, 0) == 0.1
    assert evaluate_setting("model.layers.0.self_attn.q_proj.weight", setting, 0) == 0.4
    assert evaluate_setting("x", [{"filter": "mlp", "value": 1}], 0) is None


def test_non_numeric_lists_pick_an_entry():
    assert evaluate_setting("x", ["a", "b", "c"], 0.6) == "b"


def test_lookup_order_most_specific_first():
    levels = [{"weight": 0.2}, {"weight": 0.5, "density": 0.7}, {"density": 0.9, "t": 0.3}]
    assert resolve_parameter("weight", "x", 0, levels) == 0.2
    assert resolve_parameter("density", "x", 0, levels) == 0.7
    assert resolve_parameter("t", "x", 0, levels) == 0.3
    assert resolve_parameter("lambda", "x", 0, levels, default=1.0) == 1.0
    # a level whose filters do not match falls through to the next
    assert (
        resolve_parameter("t", "mlp", 0, [{"t": [{"filter": "attn", "value": 1}]}, {"t": 0.5}])
        == 0.5
    )


def test_layer_names():
    assert layer_index("model.layers.12.mlp.up_proj.weight") == 12
    assert layer_index("model.embed_tokens.weight") is None
    assert layer_index("transformer.h.3.attn.c_attn.weight") == 3
    assert (
        rename_layer("model.layers.12.mlp.up_proj.weight", 4) == "model.layers.4.mlp.up_proj.weight"
    )


def test_unknown_schedule_suggests_a_name():
    with pytest.raises(ConfigError, match="did you mean 'study'"):
        schedule_preset("studdy")
