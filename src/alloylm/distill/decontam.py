"""Decontamination: drop generated items that share word n-grams with benchmark questions or options.

The n-gram overlap test is the one GPT-3 (Brown et al. 2020, appendix C) and later model reports
use: an item is contaminated when any of its word n-grams appears in a benchmark question or
answer option. Benchmark files: JSONL with `question` (+ `choices`/`options`/`stem`), or the MMLU
CSV layout (question, options..., answer letter, no header).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from alloylm.data.jsonl import iter_jsonl
from alloylm.distill.dedup import normalize
from alloylm.errors import DataError

SHORT_PHRASE_MIN = 5  # options of 5..n-1 words must appear whole
_TEXT_KEYS = ("question", "stem", "prompt", "statement")
_LIST_KEYS = ("choices", "options")


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = normalize(text).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def benchmark_texts(path: Path) -> Iterable[str]:
    """Questions and options of one benchmark file."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle):
                yield from (cell for cell in row[:-1] if cell)  # last column is the answer letter
        return
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise DataError(
            "unsupported benchmark file type", file=str(path), hint="use .jsonl or .csv"
        )
    for _, record in iter_jsonl(path):
        if not isinstance(record, dict):
            continue
        for key in _TEXT_KEYS:
            if isinstance(record.get(key), str):
                yield record[key]
        for key in _LIST_KEYS:
            if isinstance(record.get(key), list):
                yield from (str(option) for option in record[key])


class Decontaminator:
    """Index of benchmark n-grams; `is_contaminated(text)` is the check."""

    def __init__(self, files: Sequence[str | Path], n: int = 8) -> None:
        self.n = n
        self.files = [str(f) for f in files]
        self._grams: set[tuple[str, ...]] = set()
        # Options shorter than n words can only match whole: keep them as exact phrases.
        self._short: set[str] = set()
        for file in files:
            path = Path(file)
            if not path.is_file():
                raise DataError(
                    "benchmark file not found", file=str(path), key="decontaminate.files"
                )
            for text in benchmark_texts(path):
                grams = ngrams(text, n)
                if grams:
                    self._grams |= grams
                elif (
                    len(normalize(text).split()) >= 4
                ):  # tiny options ("yes", "organ") would match everything
                    self._short.add(normalize(text))

    def __len__(self) -> int:
        return len(self._grams) + len(self._short)

    def clean_lines(self, text: str) -> tuple[str, int]:
        """`text` without its contaminated lines, and how many were removed (for long CPT text)."""
        lines = text.split("\n")
        kept = [line for line in lines if not self.is_contaminated(line)]
        return "\n".join(kept), len(lines) - len(kept)

    def is_contaminated(self, text: str) -> bool:
        if not ngrams(text, self.n).isdisjoint(self._grams):
            return True
        if not self._short:
            return False
        words = normalize(text).split()
        return any(
            " ".join(words[i : i + k]) in self._short
            for k in range(SHORT_PHRASE_MIN, self.n)
            for i in range(len(words) - k + 1)
        )
