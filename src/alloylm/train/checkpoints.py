"""Checkpoints of an interrupted training, kept in the stage's state folder."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Written last by transformers' Trainer._save_checkpoint: its presence marks a complete checkpoint.
_COMPLETE_MARKER = "trainer_state.json"


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The complete `checkpoint-N` folder with the highest N, or None.

    A process killed while saving leaves a folder without trainer_state.json; it is skipped so
    that the run resumes from the previous complete checkpoint instead of failing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    steps = []
    for child in folder.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir() and (child / _COMPLETE_MARKER).is_file():
            steps.append((int(match.group(1)), child))
    return max(steps)[1] if steps else None


def checkpoint_step(checkpoint: Path | None) -> int:
    """The global step a checkpoint folder was saved at (0 for None)."""
    if checkpoint is None:
        return 0
    match = _CHECKPOINT.match(Path(checkpoint).name)
    return int(match.group(1)) if match else 0


def remove_checkpoints(folder: str | Path) -> int:
    """Delete the `checkpoint-N` folders once the final model is saved; return how many.

    They hold optimizer state (about 3x the model's size each) and are useless after success:
    the pipeline skips a stage whose artifact exists.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for child in folder.iterdir():
        if _CHECKPOINT.match(child.name) and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
            removed += 1
    return removed
