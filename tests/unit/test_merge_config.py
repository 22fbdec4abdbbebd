"""Merge settings: native YAML, mergekit YAML as is, defaults, sweeps, errors."""

from __future__ import annotations

import pytest

from alloylm.errors import ConfigError
from alloylm.merge.config import settings_from_dict
from alloylm.merge.plan import STUDY_SCHEDULE, VARIANT_G_SCHEDULE
from alloylm.merge.yaml_file import load_merge_yaml

MERGEKIT_SLERP = """\
slices:
  - sources:
      - model: /models/a
        layer_range: [0, 30]
      - model: /models/b
        layer_range: [0, 30]
merge_method: slerp
base_model: /models/a
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
"""


def test_mergekit_yaml_is_read_unchanged(tmp_path):
    path = tmp_path / "slerp.yml"
    path.write_text(MERGEKIT_SLERP)
    settings = load_merge_yaml(path)
    assert settings.method == "slerp"
    assert settings.dtype == "bfloat16"
    assert [m.model for m in settings.model_inputs()] == ["/models/a", "/models/b"]
    assert settings.variants() == [(None, {"t": STUDY_SCHEDULE})]


def test_mergekit_models_form_with_weights(tmp_path):
    path = tmp_path / "ties.yml"
    path.write_text(
        "models:\n  - model: /m/a\n  - model: /m/b\n    parameters: {weight: 0.5, density: 0.5}\n"
        "merge_method: ties\nbase_model: /m/a\nparameters: {normalize: true}\ndtype: float16\n"
    )
    settings = load_merge_yaml(path)
    inputs = settings.model_inputs()
    assert inputs[0].model == "/m/a" and inputs[1].parameters == {"weight": 0.5, "density": 0.5}


def test_native_slerp_defaults_to_the_study_schedule():
    settings = settings_from_dict({"base_model": "tiny:llama", "models": ["tiny:llama:1"]})
    assert settings.method == "slerp"
    assert settings.variants() == [(None, {"t": STUDY_SCHEDULE})]
    assert [m.model for m in settings.model_inputs()] == ["tiny:llama", "tiny:llama:1"]


def test_sweeps_of_schedules_and_grids():
    listed = settings_from_dict(
        {
            "base_model": "a",
            "models": ["b"],
            "sweep": [
                {"name": "s", "schedule": "study"},
                {"name": "g", "schedule": "variant_g"},
                {"name": "t3", "parameters": {"t": 0.3}},
            ],
        }
    )
    assert listed.variants() == [
        ("s", {"t": STUDY_SCHEDULE}),
        ("g", {"t": VARIANT_G_SCHEDULE}),
        ("t3", {"t": 0.3}),
    ]
    grid = settings_from_dict({"base_model": "a", "models": ["b"], "sweep": {"grid": [0.25, 0.75]}})
    assert grid.variants() == [("t0.25", {"t": 0.25}), ("t0.75", {"t": 0.75})]


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"method": "slurp", "base_model": "a", "models": ["b"]}, None, "did you mean 'slerp'"),
        (
            {"base_model": "a", "models": ["b"], "schedule": "study", "parameters": {"t": 0.5}},
            None,
            "either schedule",
        ),
        ({"method": "ties", "models": ["b"]}, None, "needs base_model"),
        ({"base_model": "a", "models": ["b"], "dtype": "bf17"}, None, "dtype"),
        ({"base_model": "a", "models": ["b"], "colour": 1}, "colour", "Extra inputs"),
    ],
)
def test_errors_name_the_problem(data, key, message):
    with pytest.raises(ConfigError, match=message) as info:
        settings_from_dict(data, file="merge.yaml")
    assert "merge.yaml" in str(info.value)
    if key:
        assert info.value.key == key


def test_mergekit_unsupported_keys_are_refused(tmp_path):
    path = tmp_path / "m.yml"
    path.write_text(
        "merge_method: slerp\nmodels: [{model: a}, {model: b}]\nbase_model: a\nparameters: {t: 0.5}\ntokenizer: {source: union}\n"
    )
    with pytest.raises(ConfigError, match="token surgery"):
        load_merge_yaml(path)
    path.write_text("merge_method: slerp\nmodels: [{model: a}, {model: b}]\nbase_model: a\n")
    with pytest.raises(ConfigError, match="slerp needs parameter t"):
        load_merge_yaml(path)
