"""Checkpoints of an interrupted training, kept in the stage's state folder."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Written last by transformers' Trainer._save_checkpoint (after weights, optimizer, scheduler and
# RNG state): a complete, parseable copy marks a complete checkpoint.
_COMPLETE_MARKER = "trainer_state.json"
# The weights of a finished model: full, sharded with an index, or a LoRA adapter.
ARTIFACT_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
)
# One of these holds a checkpoint's weights: the files above, or pickled ones.
_WEIGHT_FILES = (*ARTIFACT_WEIGHT_FILES, "pytorch_model.bin", "pytorch_model.bin.index.json")
# A DeepSpeed checkpoint keeps its (partitioned) weights and optimizer state in `global_stepN/`,
# named by the file `latest`; FSDP's sharded state dict in `pytorch_model_fsdp_0/`.
_SHARDED_WEIGHT_DIRS = ("pytorch_model_fsdp_0",)


def _holds_weights(folder: Path) -> bool:
    if any((folder / name).is_file() for name in _WEIGHT_FILES):
        return True
    if any((folder / name).is_dir() for name in _SHARDED_WEIGHT_DIRS):
        return True
    try:  # DeepSpeed: `latest` names the global_step folder of this checkpoint
        tag = (folder / "latest").read_text(encoding="utf-8").strip()
    except OSError:
        return False
    return bool(tag) and (folder / tag).is_dir() and any((folder / tag).iterdir())


def is_complete_checkpoint(folder: Path) -> bool:
    """True when `folder` holds weights and a whole trainer_state.json naming its step.

    A process killed while saving (kill -9, out of memory, power) leaves a folder without the
    state file, or with a truncated one; such a folder must not be resumed from.
    """
    match = _CHECKPOINT.match(folder.name)
    if not match or not folder.is_dir():
        return False
    if not _holds_weights(folder):
        return False
    try:
        state = json.loads((folder / _COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("global_step") == int(match.group(1))


def _checkpoint_folders(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The complete `checkpoint-N` folder with the highest N, or None (torn ones are skipped)."""
    complete = [
        path for _, path in _checkpoint_folders(Path(folder)) if is_complete_checkpoint(path)
    ]
    return complete[-1] if complete else None


def remove_torn_checkpoints(folder: str | Path) -> list[Path]:
    """Delete incomplete `checkpoint-N` folders; return them.

    transformers would write into such a folder again, or count it when rotating
    (save_total_limit) and delete a good checkpoint in its place.
    """
    removed = []
    for _, path in _checkpoint_folders(Path(folder)):
        if not is_complete_checkpoint(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def tokens_at_checkpoint(checkpoint: Path) -> int:
    """Input tokens seen when `checkpoint` was saved (from its trainer_state.json)."""
    state = json.loads((checkpoint / _COMPLETE_MARKER).read_text(encoding="utf-8"))
    return int(state.get("num_input_tokens_seen") or 0)


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
    folders = _checkpoint_folders(Path(folder))
    for _, path in folders:
        shutil.rmtree(path, ignore_errors=True)
    return len(folders)
