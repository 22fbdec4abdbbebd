"""Deterministic builders that need no teacher (the offline quickstart's SFT and DPO data).

- glossary_qa: {"term", "definition"} -> "What is {term}?" / definition, as a chat example;
- glossary_preference: same prompt, chosen = the term's definition, rejected = the definition of
  another term drawn with a seeded RNG (from the same book, never an identical definition);
- exercise_qa: {"question", "answer"} -> chat example.
Every record keeps its source file and line.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alloylm.data.jsonl import iter_jsonl
from alloylm.errors import DataError

BUILDERS = ("glossary_qa", "glossary_preference", "exercise_qa")
Record = tuple[str, dict[str, Any]]


def read_jsonl(path: str | Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(
            "file not found", file=str(path), hint="check `builders[].path` in the distill stage"
        )
    for line_number, record in iter_jsonl(path):
        missing = [k for k in required if not isinstance(record.get(k), str)]
        if missing:
            raise DataError(
                f"missing string field(s) {', '.join(missing)}",
                file=str(path),
                line=line_number,
                hint=f"each line needs {', '.join(required)}",
            )
        yield line_number, record


def term_question(term: str) -> str:
    return f"What is {term.strip()}?"


def _definition_answer(definition: str) -> str:
    text = definition.strip()
    return text[:1].upper() + text[1:] if text else text


def _source(path: str | Path, line: int, builder: str) -> dict[str, Any]:
    return {"builder": builder, "file": Path(path).name, "line": line}


def glossary_qa(path: str | Path, limit: int | None = None) -> list[Record]:
    records: list[Record] = []
    for line, row in read_jsonl(path, ("term", "definition")):
        if not row["term"].strip() or not row["definition"].strip():
            continue
        messages = [
            {"role": "user", "content": term_question(row["term"])},
            {"role": "assistant", "content": _definition_answer(row["definition"])},
        ]
        records.append(
            ("chat", {"messages": messages, "source": _source(path, line, "glossary_qa")})
        )
    return records[:limit] if limit else records


def glossary_preference(path: str | Path, *, seed: int, limit: int | None = None) -> list[Record]:
    """One pair per term; the rejected definition is another term's, picked with `seed`."""
    rows = [
        (line, row)
        for line, row in read_jsonl(path, ("term", "definition"))
        if row["term"].strip() and row["definition"].strip()
    ]
    rng = random.Random(seed)
    by_book: dict[str, list[int]] = {}
    for index, (_, row) in enumerate(rows):
        by_book.setdefault(row.get("book", ""), []).append(index)
    records: list[Record] = []
    for line, row in rows:
        pool = (
            by_book[row.get("book", "")]
            if len(by_book[row.get("book", "")]) > 1
            else list(range(len(rows)))
        )
        own = _definition_answer(row["definition"]).lower()
        other = None
        for _ in range(20):  # a different term whose definition is not the same text
            candidate = rows[rng.choice(pool)][1]
            if (
                candidate["term"].strip().lower() != row["term"].strip().lower()
                and _definition_answer(candidate["definition"]).lower() != own
            ):
                other = candidate
                break
        if other is None:
            continue
        records.append(
            (
                "preference",
                {
                    "prompt": term_question(row["term"]),
                    "chosen": _definition_answer(row["definition"]),
                    "rejected": _definition_answer(other["definition"]),
                    "source": {
                        **_source(path, line, "glossary_preference"),
                        "rejected_term": other["term"],
                    },
                },
            )
        )
    return records[:limit] if limit else records


def exercise_qa(path: str | Path, limit: int | None = None) -> list[Record]:
    records: list[Record] = []
    for line, row in read_jsonl(path, ("question", "answer")):
        question, answer = row["question"].strip(), row["answer"].strip()
        if not question or not answer:
            continue
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        source = _source(path, line, "exercise_qa")
        if row.get("id"):
            source["id"] = row["id"]
        records.append(("chat", {"messages": messages, "source": source}))
    return records[:limit] if limit else records


def run_builder(
    kind: str, path: str | Path, *, seed: int, limit: int | None = None
) -> list[Record]:
    if kind == "glossary_qa":
        return glossary_qa(path, limit)
    if kind == "glossary_preference":
        return glossary_preference(path, seed=seed, limit=limit)
    if kind == "exercise_qa":
        return exercise_qa(path, limit)
    raise DataError(
        f"unknown builder {kind!r}", key="builders[].kind", hint=f"use one of {', '.join(BUILDERS)}"
    )
