"""A checkpoint torn by a kill while it was written is skipped (and removed), not resumed from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from alloylm.contract import Progress, StageContext
from alloylm.stages import cpt
from alloylm.train.checkpoints import (
    is_complete_checkpoint,
    latest_checkpoint,
    remove_torn_checkpoints,
)

WORDS = [
    "cell",
    "membrane",
    "protein",
    "nucleus",
    "tissue",
    "organ",
    "muscle",
    "bone",
    "nerve",
    "blood",
    "heart",
    "lung",
]


class Stop(Exception):
    pass


class Recorder(Progress):
    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.lines: list[str] = []

    def update(self, step, **fields):
        if self.stop_at is not None and step >= self.stop_at:
            raise Stop(step)

    def log(self, message):
        self.lines.append(message)


def corpus(folder: Path) -> Path:
    path = folder / "corpus.jsonl"
    rows = [{"text": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(40))} for i in range(12)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def config(data: Path, **train) -> cpt.Config:
    return cpt.Config(
        model="tiny:llama",
        data=[{"path": str(data)}],
        train={
            "max_steps": 4,
            "max_seq_length": 32,
            "per_device_batch_size": 2,
            "learning_rate": 1e-2,
            "lr_scheduler": "constant",
            "save_steps": 2,
            **train,
        },
    )


def run(root: Path, cfg: cpt.Config, progress: Progress, work: str):
    ctx = StageContext(
        stage_name="cpt",
        run_name="t",
        seed=1,
        work_dir=root / work,
        state_dir=root / "state",
        output_root=root,
        progress=progress,
    )
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    return cpt.run(ctx, cfg)


def tear(good: Path, step: int, how: str) -> Path:
    """A copy of `good` as checkpoint-`step`, damaged the way a kill while saving leaves it."""
    torn = good.parent / f"checkpoint-{step}"
    shutil.copytree(good, torn)
    state = torn / "trainer_state.json"
    if how == "no_state":
        state.unlink()
    elif how == "truncated_state":
        state.write_text(state.read_text()[:40])
    elif how == "no_weights":
        (torn / "model.safetensors").unlink()
    state_text = state.read_text() if state.exists() else None
    if state_text and how != "truncated_state":
        data = json.loads(state_text)
        data["global_step"] = step
        state.write_text(json.dumps(data))
    return torn


@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["no_state", "truncated_state", "no_weights"])
def test_resume_skips_a_torn_checkpoint_and_finishes(tmp_path, tiny_llama, how):
    cfg = config(corpus(tmp_path))
    with pytest.raises(Stop):
        run(tmp_path, cfg, Recorder(stop_at=3), "w1")
    folder = tmp_path / "state" / "checkpoints"
    good = folder / "checkpoint-2"
    assert is_complete_checkpoint(good)
    torn = tear(good, 3, how)
    assert not is_complete_checkpoint(torn)
    assert latest_checkpoint(folder) == good

    progress = Recorder()
    result = run(tmp_path, cfg, progress, "w2")
    assert result.metrics["resumed_from_step"] == 2
    assert result.metrics["steps"] == 4
    assert not torn.exists()
    assert any("removed incomplete checkpoint checkpoint-3" in line for line in progress.lines)
    assert any("resuming from checkpoint-2" in line for line in progress.lines)
    assert (tmp_path / "w2" / "model.safetensors").is_file()


@pytest.mark.timeout(240)
def test_resume_survives_rotation_of_the_checkpoint_it_started_from(tmp_path, tiny_llama):
    """save_total_limit deletes the checkpoint a resumed run started from once newer ones exist;
    the tokens it had seen are read before training (the FileNotFoundError of issue 14)."""
    cfg = config(corpus(tmp_path), save_steps=1, save_total_limit=1, max_steps=5)
    with pytest.raises(Stop):
        run(tmp_path, cfg, Recorder(stop_at=2), "w1")
    assert latest_checkpoint(tmp_path / "state" / "checkpoints").name == "checkpoint-1"
    result = run(tmp_path, cfg, Recorder(), "w2")
    assert result.metrics["resumed_from_step"] == 1
    assert result.metrics["steps"] == 5


def test_remove_torn_checkpoints_keeps_complete_ones(tmp_path):
    good = tmp_path / "checkpoint-4"
    good.mkdir()
    (good / "model.safetensors").write_bytes(b"x")
    (good / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    torn = tmp_path / "checkpoint-6"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"x")
    other_step = tmp_path / "checkpoint-8"  # a state file of another step: copied, not saved
    other_step.mkdir()
    (other_step / "model.safetensors").write_bytes(b"x")
    (other_step / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    assert latest_checkpoint(tmp_path) == good
    assert remove_torn_checkpoints(tmp_path) == [torn, other_step]
    assert good.is_dir() and not torn.exists() and not other_step.exists()
