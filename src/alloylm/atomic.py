"""Atomic writes: build beside the target, rename when complete.

A process killed at any point (kill -9 included) leaves either the old target or the new one,
never a half-written one. Replacing a folder is one atomic swap where Linux offers it
(renameat2 RENAME_EXCHANGE). Leftover temporary folders are named `.<target>.tmp-<pid>-<rand>`
and are removed by `clean_stale_temporaries` on the next run, which also puts back a previous
folder that a killed two-rename swap had moved aside.
"""

from __future__ import annotations

import contextlib
import errno
import functools
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
        _swap_in(tmp, target)
    else:
        os.replace(tmp, target)


# Linux renameat2(2) flag: swap two paths in one step (Linux >= 3.15, glibc >= 2.28).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
PREVIOUS_SUFFIX = "-previous"


@functools.cache
def _renameat2() -> Any:
    """libc's renameat2 on Linux, else None."""
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return None
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    return function


def _rename_exchange(a: Path, b: Path) -> bool:
    """Swap `a` and `b` atomically where the kernel can; False where it cannot."""
    import ctypes

    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # old kernel or file system
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace the folder `target` by `tmp` so that a kill at any instant leaves one of them there.

    Where the kernel swaps two paths in one step this is one call. Elsewhere the old folder is
    moved aside under a `-previous` name first; a kill between the two renames leaves no
    `target`, and `clean_stale_temporaries` then puts the previous folder back.
    """
    if _rename_exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old folder
        return
    aside = Path(f"{temporary_sibling(target)}{PREVIOUS_SUFFIX}")
    os.replace(target, aside)
    os.replace(tmp, target)
    shutil.rmtree(aside, ignore_errors=True)


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
            if _restore_previous(child):
                removed.append(child)
                continue
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
            removed.append(child)
    return removed


def _restore_previous(child: Path) -> bool:
    """A folder moved aside by a swap that was killed before the new one arrived goes back."""
    if not child.name.endswith(PREVIOUS_SUFFIX) or not child.is_dir():
        return False
    target = child.parent / child.name[1:].split(TMP_MARKER, 1)[0]
    if target.exists():
        return False
    os.replace(child, target)
    return True


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
