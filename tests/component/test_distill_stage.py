"""The `distill` stage with the deterministic builders, as the quickstart uses it (no teacher)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from alloylm.contract import StageContext
from alloylm.distill.builders import glossary_preference
from alloylm.stages import distill as stage


def _quickstart_config(data_root: Path) -> stage.Config:
    sft = data_root / "openstax_sft"
    return stage.Config(
        kind="distill",
        builders=[
            {"kind": "glossary_qa", "path": str(sft / "anatomy_physiology_2e_glossary.jsonl")},
            {"kind": "exercise_qa", "path": str(sft / "anatomy_physiology_2e_exercises_qa.jsonl")},
            {
                "kind": "glossary_preference",
                "path": str(sft / "anatomy_physiology_2e_glossary.jsonl"),
            },
        ],
        decontaminate={
            "files": [
                str(data_root / "openstax_mcq" / "anatomy_physiology_2e_mcq.jsonl"),
                str(data_root / "mmlu_stem" / "anatomy_test.csv"),
            ]
        },
    )


def test_quickstart_builders_make_sft_and_dpo_files(data_root: Path, tmp_path: Path) -> None:
    cfg = _quickstart_config(data_root)
    assert stage.PRODUCES == "data"
    specs = stage.inputs(cfg)
    assert [s.key for s in specs][:3] == [
        "builders[0].path",
        "builders[1].path",
        "builders[2].path",
    ]
    assert specs[-1].data_kind == "benchmark"
    ctx = StageContext("distill", "quickstart", 42, tmp_path / "work", tmp_path / "state", tmp_path)
    result = stage.run(ctx, cfg)
    assert result.outputs == {"chat": "sft.jsonl", "preference": "preference.jsonl"}
    chat = [json.loads(line) for line in (tmp_path / "work" / "sft.jsonl").read_text().splitlines()]
    pairs = [
        json.loads(line)
        for line in (tmp_path / "work" / "preference.jsonl").read_text().splitlines()
    ]
    stats = result.details["distill"]
    dropped = stats["rejects"]["filter:contaminated"]
    assert dropped > 0  # some glossary/exercise text overlaps the A&P review questions: removed
    built = 3190 + 512 + len(glossary_preference(cfg.builders[2].path, seed=42))
    assert (
        len(chat) + len(pairs) + dropped + stats["rejects"].get("filter:duplicate", 0) == built
    )  # nothing lost
    assert len(chat) > 3500 and len(pairs) > 3000
    assert all(set(r) == {"messages", "source"} for r in chat) and all(
        set(p) == {"prompt", "chosen", "rejected", "source"} for p in pairs
    )
    assert result.metrics == {
        "records_chat": len(chat),
        "records_preference": len(pairs),
        "teacher_calls": 0,
        "teacher_tokens": 0,
    }
    assert set(result.data_hashes) == {str(s.value) for s in specs}
    # Deterministic: same seed, same files.
    again = stage.run(
        StageContext("distill", "quickstart", 42, tmp_path / "w2", tmp_path / "state", tmp_path),
        cfg,
    )
    assert again.outputs == result.outputs
    assert (tmp_path / "w2" / "preference.jsonl").read_bytes() == (
        tmp_path / "work" / "preference.jsonl"
    ).read_bytes()


def test_config_errors_are_caught_before_any_work() -> None:
    with pytest.raises(ValidationError, match="generators need a teacher"):
        stage.Config(kind="distill", paths=["x.md"], generators=["qa"])
    with pytest.raises(ValidationError, match="base_url"):
        stage.Config(
            kind="distill",
            paths=["x.md"],
            generators=["qa"],
            teacher={"type": "openai", "model": "m"},
        )
    with pytest.raises(ValidationError, match="overlap"):
        stage.Config(kind="distill", paths=["x.md"], chunking={"max_tokens": 32, "overlap": 32})
    with pytest.raises(ValidationError, match="nothing to do"):
        stage.Config(kind="distill")
    with pytest.raises(ValidationError):
        stage.Config(
            kind="distill",
            paths=["x.md"],
            generators=["poems"],
            teacher={"type": "local", "model": "tiny:llama"},
        )
