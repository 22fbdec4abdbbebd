"""`alloy eval` arguments: column mappings and task names."""

from __future__ import annotations

import argparse

import pytest

from alloylm.cli import eval as cli
from alloylm.errors import ConfigError, DataError
from alloylm.evals.catalog import resolve_task


def test_mapping_pairs():
    assert cli.parse_mapping(["question=Stem", "choices=o1,o2", "answer=Key"]) == {
        "question": "Stem",
        "choices": ["o1", "o2"],
        "answer": "Key",
    }
    assert cli.parse_mapping(None) is None
    with pytest.raises(ConfigError, match="FIELD=COLUMN"):
        cli.parse_mapping(["question"])


def test_arguments_parse_several_models_and_protocols():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        ["m1", "m2", "--tasks", "a.jsonl", "--protocol", "cloze", "paper", "--template", "plain"]
    )
    assert (
        args.models == ["m1", "m2"]
        and args.protocol == ["cloze", "paper"]
        and args.template == "plain"
    )


def test_task_names(data_root, monkeypatch):
    monkeypatch.setenv("ALLOY_DATA", str(data_root))
    spec = resolve_task("mmlu_stem/college_biology_test")
    assert spec.path.endswith("college_biology_test.csv") and spec.name == "college_biology_test"
    assert resolve_task("anatomy_physiology_2e_mcq").path.endswith(
        "anatomy_physiology_2e_mcq.jsonl"
    )
    assert resolve_task("lm_eval:mmlu_anatomy").path is None
    with pytest.raises(DataError, match="neither a file"):
        resolve_task("no_such_benchmark_anywhere")
