"""Eval items and task types: multiple choice, true/false, numeric, perplexity.

An `Item` is one scorable question whatever file it came from; loaders (loaders.py) turn files
into items, protocols (protocol.py) turn items into prompts and scores. A task type decides which
items of a file belong to the task and which protocols can score them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

ItemKind = Literal["mcq", "true_false", "numeric"]
LETTERS = "ABCDEFGHIJ"
TRUE_FALSE_LABELS = ("True", "False")
MIN_CHOICES, MAX_CHOICES = 2, len(LETTERS)


@dataclass(frozen=True)
class Item:
    """One question. `answer_index` points into `choices` (mcq, true_false); numeric items use ranges."""

    id: str
    kind: ItemKind
    question: str  # the stem, without the options
    choices: tuple[str, ...] = ()
    answer_index: int | None = None
    answer_ranges: tuple[tuple[float, float], ...] = ()
    category: str | None = None
    line: int | None = None  # where it came from, for reports

    @property
    def labels(self) -> tuple[str, ...]:
        """What the model answers with: letters for mcq, True/False for true_false."""
        if self.kind == "true_false":
            return TRUE_FALSE_LABELS
        return tuple(LETTERS[: len(self.choices)])

    @property
    def gold(self) -> str:
        if self.kind == "numeric":
            return " or ".join(f"[{low:g}, {high:g}]" for low, high in self.answer_ranges)
        assert self.answer_index is not None
        return self.labels[self.answer_index]


def true_false_item(id: str, question: str, truth: bool, **extra: object) -> Item:
    return Item(
        id=id,
        kind="true_false",
        question=question,
        choices=TRUE_FALSE_LABELS,
        answer_index=0 if truth else 1,
        **extra,
    )  # type: ignore[arg-type]


@dataclass
class LoadReport:
    """What a loader kept and skipped, with the reason and line of every skip."""

    file: str
    items: list[Item] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "file:line: reason"
    subject: str | None = None  # e.g. "college biology" for an MMLU file (used by the plain prompt)

    def skip(self, line: int | None, reason: str) -> None:
        where = f"{self.file}:{line}" if line is not None else self.file
        self.skipped.append(f"{where}: {reason}")


class TaskType:
    """Base of the task types named in registry.EVAL_TASK_TYPES."""

    name: ClassVar[str] = ""
    item_kinds: ClassVar[tuple[ItemKind, ...]] = ()

    def select(self, items: list[Item]) -> list[Item]:
        return [item for item in items if item.kind in self.item_kinds]


class MultipleChoiceTask(TaskType):
    name = "mcq"
    item_kinds = ("mcq",)


class TrueFalseTask(TaskType):
    name = "true_false"
    item_kinds = ("true_false",)


class NumericTask(TaskType):
    name = "numeric"
    item_kinds = ("numeric",)


class PerplexityTask(TaskType):
    """Held-out text: documents are read by loaders.load_documents, scored by scoring.perplexity."""

    name = "perplexity"
    item_kinds = ()


class MixedTask(TaskType):
    """No type given: every item the file holds (a study file mixes MC and TF questions)."""

    name = "auto"
    item_kinds = ("mcq", "true_false", "numeric")


def task_type(name: str | None) -> TaskType:
    if name in (None, "auto"):
        return MixedTask()
    from alloylm.registry import EVAL_TASK_TYPES

    return EVAL_TASK_TYPES.get(name)()
