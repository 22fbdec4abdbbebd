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


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest known name, or '' when nothing is close."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""
