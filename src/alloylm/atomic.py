"""Atomic writes: build beside the target, rename when complete.

A process killed at any point (kill -9 included) leaves either the old target or the new one,
never a half-written one. Leftover temporary folders are named `.<target>.tmp-<pid>-<rand>` and
are removed by `clean_stale_temporaries` on the next run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_MARKER = ".tmp-"


def temporary_sibling(target: Path) -> Path:
    """A fresh temporary path beside `target` that `clean_stale_temporaries` recognises."""
    return target.parent / f".{target.name}{TMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask sets it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_permissions(path: str | os.PathLike[str]) -> None:
    """Give `path` (a file, or a folder and everything in it) the modes a normal write gets.

    Libraries that write through `tempfile` (safetensors via transformers, for one) leave files
    at 0600, which makes artifacts unreadable to the other users of a shared machine. Files get
    0666 and folders 0777, both less the umask (0644 / 0755 with the usual umask 022); an
    executable bit already set is kept.
    """
    mask = _umask()
    root = Path(path)
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for item in paths:
        if item.is_symlink():
            continue
        mode = item.stat().st_mode & 0o777
        executable = item.is_dir() or mode & 0o100
        wanted = (0o777 if executable else 0o666) & ~mask
        if mode != wanted:
            os.chmod(item, wanted)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str], *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it becomes `target` in one rename.

    On an exception the temporary folder is removed and `target` is left as it was.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():  # never swap a user's file for a folder
        raise FileExistsError(errno.EEXIST, "a file is where the output folder goes", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(target)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_permissions(tmp)
    if target.exists():
        if not replace:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(target)
        # Move the old one aside first so the swap is two renames, never a partial folder.
        old = temporary_sibling(target)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_jsonl(path: str | os.PathLike[str], rows: Any) -> None:
    """Write one JSON object per line (UTF-8 kept readable) through a temporary file and a rename."""
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def clean_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temporaries left by killed processes in `folder`; return what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for child in folder.iterdir():
        if child.name.startswith(".") and TMP_MARKER in child.name:
            pid_part = child.name.split(TMP_MARKER, 1)[1].split("-", 1)[0]
            if (
                pid_part.isdigit()
                and _process_alive(int(pid_part))
                and int(pid_part) != os.getpid()
            ):
                continue  # another live process is still building it
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
            removed.append(child)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
