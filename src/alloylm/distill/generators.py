"""The study's generators (Q&A, summary, structured record) plus preference triples.

Each generator turns one unit (a chunk, or a whole document for `structured`) into records
through `ask(template, variables, attempt)` -> teacher text. A response that cannot be parsed
raises ItemRejected(reason); the engine retries it with a new attempt number (a new cache key)
up to `parse_retries` times, then counts it under that reason and moves on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from alloylm.distill.ingest import Chunk, Document

Ask = Callable[[str, dict[str, Any], int], str]
Record = tuple[str, dict[str, Any]]  # (data kind: text | chat | preference, record)

GENERATORS = ("qa", "summary", "structured", "preference")
CHUNK_GENERATORS = ("qa", "summary", "preference")


class ItemRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_QA = re.compile(
    r"(?:^|\n)\s*\**Q(?:uestion)?\s*\d*\**\s*[:.)]\**\s*(.+?)\n\s*\**A(?:nswer)?\s*\d*\**\s*[:.)]\**\s*(.+?)(?=\n\s*\**Q(?:uestion)?\s*\d*\**\s*[:.)]|\Z)",
    re.DOTALL | re.IGNORECASE,
)


def parse_qa_pairs(text: str) -> list[tuple[str, str]]:
    """(question, answer) pairs from 'Q: ... / A: ...' text; pairs with an empty side are dropped."""
    pairs = []
    for question, answer in _QA.findall(text.strip()):
        question, answer = " ".join(question.split()), " ".join(answer.split())
        if question and answer:
            pairs.append((question, answer))
    return pairs


class StructuredRecord(BaseModel):
    """The study's per-paper record; every key required, no others."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    Title: str
    Insights: list[str]
    Facts: list[str]
    Details: list[str]
    Comparisons: list[str]
    Questions: list[str]
    Answers: list[str]

    @field_validator(
        "Insights", "Facts", "Details", "Comparisons", "Questions", "Answers", mode="before"
    )
    @classmethod
    def _one_string_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


def extract_json_object(text: str) -> Any:
    """The first JSON object in `text` (tolerates ```json fences and prose around it)."""
    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
            return value
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    raise ItemRejected("invalid_json")


def validate_structured(text: str) -> StructuredRecord:
    value = extract_json_object(text)
    if not isinstance(value, dict):
        raise ItemRejected("invalid_json")
    try:
        record = StructuredRecord.model_validate(value)
    except ValidationError:
        raise ItemRejected("invalid_schema") from None
    if len(record.Questions) != len(record.Answers):
        raise ItemRejected("invalid_schema")
    return record


def source_of(unit: Chunk | Document, generator: str) -> dict[str, Any]:
    if isinstance(unit, Chunk):
        return {
            "generator": generator,
            "chunk": unit.chunk_id,
            "doc": unit.doc_id,
            "section": unit.section,
        }
    return {"generator": generator, "doc": unit.doc_id, "file": unit.source}


def _variables(unit: Chunk | Document) -> dict[str, Any]:
    section = unit.section if isinstance(unit, Chunk) else ""
    return {"title": unit.title, "section": section, "text": unit.text}


def _chat(question: str, answer: str, source: dict[str, Any]) -> Record:
    return "chat", {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
        "source": source,
    }


def generate_qa(unit: Chunk, ask: Ask, attempt: int, *, n_pairs: int = 3) -> list[Record]:
    pairs = parse_qa_pairs(ask("qa", {**_variables(unit), "n_pairs": n_pairs}, attempt))
    if not pairs:
        raise ItemRejected("no_qa_pairs")
    source = source_of(unit, "qa")
    return [_chat(q, a, source) for q, a in pairs[:n_pairs]]


def generate_summary(unit: Chunk, ask: Ask, attempt: int, *, min_words: int = 5) -> list[Record]:
    text = ask("summary", _variables(unit), attempt).strip()
    if len(text.split()) < min_words:
        raise ItemRejected("empty_response")
    return [("text", {"text": text, "source": source_of(unit, "summary")})]


def render_structured(record: StructuredRecord) -> str:
    """The record as CPT text: one labelled block per key."""
    parts = [f"Title: {record.Title}"]
    for key in ("Insights", "Facts", "Details", "Comparisons"):
        values = getattr(record, key)
        if values:
            parts.append(f"{key}:\n" + "\n".join(f"- {v}" for v in values))
    for question, answer in zip(record.Questions, record.Answers, strict=True):
        parts.append(f"Question: {question}\nAnswer: {answer}")
    return "\n\n".join(parts)


def generate_structured(unit: Document, ask: Ask, attempt: int) -> list[Record]:
    record = validate_structured(ask("structured", _variables(unit), attempt))
    source = source_of(unit, "structured")
    records: list[Record] = [
        (
            "text",
            {
                "text": render_structured(record),
                "structured": record.model_dump(),
                "source": source,
            },
        )
    ]
    records += [
        _chat(q, a, source)
        for q, a in zip(record.Questions, record.Answers, strict=True)
        if q.strip() and a.strip()
    ]
    return records


def generate_preference(unit: Chunk, ask: Ask, attempt: int) -> list[Record]:
    pairs = parse_qa_pairs(ask("preference_question", _variables(unit), attempt))
    if not pairs:
        raise ItemRejected("no_qa_pairs")
    question, chosen = pairs[0]
    rejected = ask(
        "preference_rejected", {**_variables(unit), "question": question, "chosen": chosen}, attempt
    ).strip()
    if not rejected:
        raise ItemRejected("empty_response")
    if " ".join(rejected.split()).lower() == chosen.lower():
        raise ItemRejected("rejected_equals_chosen")
    return [
        (
            "preference",
            {
                "prompt": question,
                "chosen": chosen,
                "rejected": rejected,
                "source": source_of(unit, "preference"),
            },
        )
    ]


GENERATOR_FUNCTIONS: dict[str, Callable[..., list[Record]]] = {
    "qa": generate_qa,
    "summary": generate_summary,
    "structured": generate_structured,
    "preference": generate_preference,
}
