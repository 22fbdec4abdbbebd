"""`study.notes` (what the plan says about a strategy or step) and `ablations.settings` (any keys
of a step as an axis, e.g. the SFT objective)."""

from __future__ import annotations

import pytest

from alloylm.errors import ConfigError
from alloylm.pipeline.study import deep_merge, expand_study

SECTION = {
    "lineages": {"instruct": "tiny:llama"},
    "strategies": ["CPT", "LoRA"],
    "stages": {
        "cpt": {"data": [{"path": "text.jsonl"}]},
        "lora": {"kind": "sft", "data": [{"path": "chat.jsonl"}], "train": {"lora": {"r": 8}}},
    },
    "notes": {"LoRA": "no hyperparameters in the study"},
    "eval": {"tasks": [{"path": "mcq.jsonl"}]},
}


def _error(where, message, hint=None):
    return ConfigError(message, key=".".join(map(str, where)), hint=hint)


def test_notes_travel_to_the_plan():
    expansion = expand_study(SECTION, {"run": {"name": "t"}}, _error)
    assert expansion.notes == {"LoRA": "no hyperparameters in the study"}


def test_a_note_names_a_strategy_or_a_step():
    with pytest.raises(ConfigError, match="neither a strategy nor a step") as error:
        expand_study(deep_merge(SECTION, {"notes": {"LoRa-x": "?"}}), {}, _error)
    assert error.value.key == "study.notes.LoRa-x"


def test_a_settings_axis_compares_the_sft_objectives():
    section = {
        "lineages": {"instruct": "tiny:llama"},
        "strategies": ["CPT", "CPT-SFT"],
        "stages": {
            "cpt": {"data": [{"path": "text.jsonl"}]},
            "sft": {"data": [{"path": "chat.jsonl"}], "train": {"max_steps": 2}},
        },
        "ablations": {
            "settings": {
                "sft_objective": {
                    "step": "sft",
                    "variants": {
                        "ours": {"objective": "assistant_tokens"},
                        "study": {"objective": "all_tokens_concatenated", "train": {"seed": 3}},
                    },
                }
            }
        },
        "eval": {"tasks": [{"path": "mcq.jsonl"}]},
    }
    expansion = expand_study(section, {"run": {"name": "t"}}, _error)
    stages = expansion.stages
    assert [n for n, c in stages.items() if c["kind"] == "cpt"] == ["instruct_cpt"]  # shared
    assert stages["instruct_cpt_sft-ours"]["objective"] == "assistant_tokens"
    study = stages["instruct_cpt_sft-study"]
    assert study["objective"] == "all_tokens_concatenated"
    assert study["train"] == {"max_steps": 2, "seed": 3}  # laid over the template, not replacing it
    variants = [m["variant"] for m in expansion.models if m["role"] == "stage"]
    assert {"sft_objective": "study"} in variants and {"sft_objective": "ours"} in variants
    section["ablations"]["data"] = {"sft_objective": {"step": "sft", "variants": {"a": []}}}
    with pytest.raises(ConfigError, match="taken"):
        expand_study(section, {"run": {"name": "t"}}, _error)
