"""Task names -> task specs: a file path, `lm_eval:<task>`, or a file under the data root.

A bare name such as `mmlu_stem/college_biology_test` or `anatomy_physiology_2e_mcq` is looked up
(with .jsonl/.csv/.json) under the data root: $ALLOY_DATA if set, else the data that ships with
alloylm (`alloylm.resources.data_root`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alloylm.errors import DataError
from alloylm.evals.runner import TaskSpec
from alloylm.resources import data_root

_SUFFIXES = ("", ".jsonl", ".csv", ".json", ".txt")


def data_roots() -> list[Path]:
    root = data_root()
    return [root] if root.is_dir() else []


def find_task_file(name: str) -> Path | None:
    """The file a task name points to, or None."""
    direct = Path(name).expanduser()
    if direct.is_file():
        return direct.resolve()
    for root in data_roots():
        for suffix in _SUFFIXES:
            candidate = root / f"{name}{suffix}"
            if candidate.is_file():
                return candidate.resolve()
        matches = sorted(
            p for suffix in _SUFFIXES[1:] for p in root.rglob(f"{Path(name).name}{suffix}")
        )
        if len(matches) == 1:
            return matches[0].resolve()
    return None


def task_display_name(path: Path) -> str:
    return path.stem


def resolve_task(
    name_or_path: str, *, name: str | None = None, type: str | None = None, **options: Any
) -> TaskSpec:
    """A TaskSpec for a path, a data-root name, or `lm_eval:<task>`."""
    if name_or_path.startswith("lm_eval:"):
        return TaskSpec(name=name_or_path, type=type, **options)
    if options.get("include_path"):
        raise DataError(
            f"task {name_or_path!r}: include_path applies to lm_eval:<task> names only",
            hint="drop include_path, or name the task lm_eval:<task>",
        )
    path = find_task_file(name_or_path)
    if path is None:
        raise DataError(
            f"task {name_or_path!r} is neither a file nor a known data file",
            hint="give a path to a .jsonl/.csv/.json benchmark, a name under $ALLOY_DATA "
            "(e.g. openstax_mcq/anatomy_physiology_2e_mcq), or lm_eval:<task>",
        )
    return TaskSpec(name=name or task_display_name(path), path=str(path), type=type, **options)
