"""Where the tensors outside the layers sit: position 0 (mergekit >= v0.1.2), or with
`legacy_final_layers` the final norm and lm_head at 1 (mergekit <= v0.1.1, the study's merges)."""

from __future__ import annotations

import pytest

from alloylm.merge.config import settings_from_dict
from alloylm.merge.jobs import build_jobs
from alloylm.merge.plan import evaluate_setting, outside_position

NAMES = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.1.self_attn.q_proj.weight",
    "model.layers.2.self_attn.q_proj.weight",
    "model.norm.weight",
    "lm_head.weight",
]


def positions(**extra):
    settings = settings_from_dict({"base_model": "a", "models": ["b"], **extra})
    return {job.out_name: job.position for job in build_jobs(settings, NAMES, 3, ["a", "b"])}


def positions_with_slices(**extra):
    sources = [{"model": m, "layer_range": [0, 3]} for m in ("a", "b")]
    settings = settings_from_dict({"base_model": "a", "slices": [{"sources": sources}], **extra})
    return {job.out_name: job.position for job in build_jobs(settings, NAMES, 3, ["a", "b"])}


@pytest.mark.parametrize("plan", [positions, positions_with_slices])
def test_default_puts_every_tensor_outside_the_layers_at_zero(plan):
    got = plan()
    assert got["model.embed_tokens.weight"] == got["model.norm.weight"] == 0.0
    assert got["lm_head.weight"] == 0.0
    assert [got[f"model.layers.{i}.self_attn.q_proj.weight"] for i in range(3)] == [0, 0.5, 1]


@pytest.mark.parametrize("plan", [positions, positions_with_slices])
def test_legacy_puts_final_norm_and_lm_head_at_one(plan):
    got = plan(legacy_final_layers=True)
    assert got["model.embed_tokens.weight"] == 0.0  # pre-weights stayed at t=0 in v0.1.1 too
    assert got["model.norm.weight"] == got["lm_head.weight"] == 1.0
    assert [got[f"model.layers.{i}.self_attn.q_proj.weight"] for i in range(3)] == [0, 0.5, 1]


def test_a_gradient_gives_the_final_layers_its_first_or_last_value():
    gradient = [0.2, 0.9, 0.6]
    assert evaluate_setting("lm_head.weight", gradient, outside_position("lm_head.weight")) == 0.2
    legacy = outside_position("lm_head.weight", legacy_final_layers=True)
    assert evaluate_setting("lm_head.weight", gradient, legacy) == pytest.approx(0.6)
    # the study's schedule gives norm and lm_head its catch-all scalar 0.5: the same either way
    from alloylm.merge.plan import STUDY_SCHEDULE

    for position in (0.0, 1.0):
        assert evaluate_setting("model.norm.weight", STUDY_SCHEDULE, position) == 0.5
