"""`study.notes`: what the plan says about a strategy or step (e.g. values the study does not give)."""

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
