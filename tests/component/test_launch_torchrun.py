"""A training stage on 2 CPU processes (torchrun, DDP over gloo): both ranks train, one artifact.

The dpo stage precomputes its reference log-probs: TRL's pass writes them to a file that every
rank reads, named after the dataset's cache files (issue 28, defect 1: with an in-memory
selection each rank named a temporary file of its own, and rank 1 raised FileNotFoundError)."""

from __future__ import annotations

import json
from pathlib import Path

from alloylm.pipeline.launch import rank_markers, run_stage_distributed


def test_dpo_stage_on_two_processes(tiny_llama: Path, tmp_path: Path) -> None:
    from alloylm.stages import dpo

    data = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": f"What is {t}?", "chosen": f"{t} is {t}.", "rejected": "blue blue."}
        for t in "abcdefgh"
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = dpo.Config(
        model=str(tiny_llama), data=[{"path": str(data)}], beta=0.1, precompute_ref_log_probs=True,
        train={"max_steps": 2, "learning_rate": 1.0e-3, "per_device_batch_size": 2, "max_seq_length": 64},
    )  # fmt: skip
    work, state = tmp_path / "work", tmp_path / "state"
    work.mkdir()
    fields = {"stage_name": "dpo", "run_name": "t", "seed": 0, "work_dir": str(work),
              "state_dir": str(state), "output_root": str(tmp_path)}  # fmt: skip
    result = run_stage_distributed(
        "dpo", config.model_dump(mode="json"), fields, "torchrun", 2, echo=False
    )

    markers = rank_markers(state)
    assert [m["rank"] for m in markers] == [0, 1]
    assert all(m["world_size"] == 2 and m["steps"] == 2 for m in markers)
    assert markers[0]["pid"] != markers[1]["pid"]
    assert result.metrics["steps"] == 2 and result.metrics["loss_finite"]
    assert result.metrics["ref_log_probs"] == "computed"
    assert not (state / "checkpoints" / "ref-logps-scoring").exists()  # the scoring files are gone
    # one artifact, written once (by rank 0): a loadable model folder
    assert sorted(p.name for p in work.iterdir() if p.suffix == ".safetensors") == [
        "model.safetensors"
    ]
    assert (work / "config.json").exists() and (work / "tokenizer.json").exists()
