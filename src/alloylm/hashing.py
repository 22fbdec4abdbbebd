"""Content hashes used for caching and lineage (one implementation for the whole project)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
_file_cache: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, memoised per (path, size, mtime) within the process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _file_cache:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(_CHUNK):
                digest.update(block)
        _file_cache[key] = digest.hexdigest()
    return _file_cache[key]


def file_hashes(files: list[str]) -> dict[str, str]:
    """{path: sha256} of the files a stage read, for its manifest."""
    return {file: sha256_file(file) for file in files}


def file_fingerprint(path: Path) -> str:
    """Cheap identity of a large file: path, size and mtime (not its content)."""
    stat = path.stat()
    return hashlib.sha256(
        f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    ).hexdigest()[:16]


def sha256_path(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(child.relative_to(path)).encode())
        digest.update(sha256_file(child).encode())
    return digest.hexdigest()


def hash_json(value: Any) -> str:
    """sha256 of a JSON-serialisable value, independent of dict key order."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def hash_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
