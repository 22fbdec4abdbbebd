"""The identity of a local model folder: the bytes of the model's own files, nothing beside them.

Weights, config, generation config, tokenizer and chat template count; whatever else lives in the
folder (a model card, `alloy.json`, result files a user or an older alloylm wrote there) does not,
and neither do the folder's name, location or mtimes: a copied or moved model is the same model.
Hashing a model's weights takes seconds per GB, so the hash is remembered per (file, size, mtime).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from alloylm.atomic import atomic_write_json
from alloylm.hashing import hash_json, sha256_file

# weights (safetensors, a GGUF, pickled .bin), config, tokenizer files, chat template
MODEL_FILE_SUFFIXES = (
    ".safetensors", ".gguf", ".bin", ".json", ".jinja", ".model", ".txt", ".tiktoken",
)  # fmt: skip
NOT_MODEL_FILES = ("alloy.json",)  # the pipeline's manifest: lineage, timings; not the model


def model_files(folder: str | Path) -> list[Path]:
    """The files that make up the model in `folder` (top level only: HF folders are flat); a
    model given as one file (a .gguf) is that file."""
    if Path(folder).is_file():
        return [Path(folder)]
    return sorted(
        path
        for path in Path(folder).iterdir()
        if path.is_file()
        and path.suffix in MODEL_FILE_SUFFIXES
        and path.name not in NOT_MODEL_FILES
    )


def model_files_hash(folder: str | Path, memo_path: Path | None = None) -> str:
    """sha256 over the names and bytes of the model's own files; memoised in `memo_path`
    (default $ALLOY_HOME/model-hashes.json) per file path, size and mtime."""
    if memo_path is None:
        from alloylm.models.home import alloy_home

        memo_path = alloy_home() / "model-hashes.json"
    files = model_files(folder)
    stamp = hash_json([[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files])
    try:
        memo: dict[str, str] = json.loads(memo_path.read_text()) if memo_path.exists() else {}
    except (OSError, ValueError):
        memo = {}  # a torn or unreadable memo only costs a re-hash
    if stamp not in memo:
        memo[stamp] = hash_json([[p.name, sha256_file(p)] for p in files])
        with contextlib.suppress(OSError):  # a read-only home only costs a re-hash next time
            atomic_write_json(memo_path, memo)
    return memo[stamp]
