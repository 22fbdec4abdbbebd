"""User-facing errors: each names where the problem is, what was expected, and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AlloyError(Exception):
    """An error caused by user input (config, data, model source), printed without a traceback.

    Every message says where (file, line, key), what was expected, and what to do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.file:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
        if self.key:
            where = f"{where} [{self.key}]" if where else f"[{self.key}]"
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ConfigError(AlloyError):
    """A pipeline or stage configuration is invalid."""


class DataError(AlloyError):
    """A data file cannot be read or holds records of the wrong shape."""


class ModelSourceError(AlloyError):
    """A model source cannot be resolved to a local model folder."""


class StorageError(AlloyError):
    """The disk refused a write: full, read-only, or not ours to write."""


# errno -> (what happened, what to do)
_STORAGE_ERRNOS = {
    "ENOSPC": (
        "no space left on the device",
        "free space (or point run.output elsewhere) and run again; finished artifacts are kept",
    ),
    "EDQUOT": (
        "disk quota exceeded",
        "free space or raise the quota, then run again; finished artifacts are kept",
    ),
    "EROFS": (
        "the file system is read-only",
        "point run.output (or the output argument) at a writable folder",
    ),
    "EACCES": ("permission denied", "make the folder writable for this user, or write elsewhere"),
    "EPERM": (
        "operation not permitted",
        "make the folder writable for this user, or write elsewhere",
    ),
    "EEXIST": (
        "a file is in the way of a folder",
        "remove or rename that file, or choose another output path",
    ),
    "ENOTDIR": (
        "a file is in the way of a folder",
        "remove or rename that file, or choose another output path",
    ),
}


def storage_error(error: BaseException) -> StorageError | None:
    """A user-facing error for an OSError the user can act on (disk full, read-only, permissions,
    a file where a folder must go); None for anything else."""
    import errno as errno_names

    if not isinstance(error, OSError) or error.errno is None:
        return None
    name = errno_names.errorcode.get(error.errno, "")
    if name not in _STORAGE_ERRNOS:
        return None
    what, todo = _STORAGE_ERRNOS[name]
    return StorageError(f"cannot write: {what} ({error.strerror})", file=error.filename, hint=todo)


# What reading a damaged file raises (truncated gzip, corrupt Parquet, bad UTF-8, broken CSV):
# turned into a DataError naming the file by `unreadable_file`.
READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, ValueError)


def unreadable_file(file: object, error: BaseException) -> DataError:
    """A DataError for a file that cannot be read at all (not one bad record: the whole file)."""
    reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    return DataError(
        f"cannot read the file ({type(error).__name__}: {reason})",
        file=str(file),
        hint="the file is damaged, truncated or not in the format its name says; "
        "re-export it, or set `format:` when the extension is misleading",
    )


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest known name, or '' when nothing is close."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""
