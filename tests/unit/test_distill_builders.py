"""Deterministic builders on the shipped OpenStax files: glossary Q&A, glossary preference, exercises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alloylm.distill.builders import exercise_qa, glossary_preference, glossary_qa
from alloylm.errors import DataError


@pytest.fixture(scope="module")
def glossary(data_root: Path) -> Path:
    return data_root / "openstax_sft" / "anatomy_physiology_2e_glossary.jsonl"


def test_glossary_qa_on_shipped_file(glossary: Path) -> None:
    records = glossary_qa(glossary)
    assert len(records) == 3190
    kind, first = records[0]
    assert kind == "chat"
    assert first["messages"] == [
        {"role": "user", "content": "What is anatomy?"},
        {
            "role": "assistant",
            "content": "Science that studies the form and composition of the body’s structures",
        },
    ]
    assert first["source"] == {"builder": "glossary_qa", "file": glossary.name, "line": 1}


def test_glossary_preference_rejects_another_terms_definition_seeded(glossary: Path) -> None:
    rows = [json.loads(line) for line in glossary.read_text().splitlines()]
    definitions: dict[
        str, set[str]
    ] = {}  # a term can appear in several chapters with other wording
    for row in rows:
        definitions.setdefault(row["term"].strip(), set()).add(row["definition"].strip().lower())
    pairs = glossary_preference(glossary, seed=42)
    assert len(pairs) >= 3100
    for kind, pair in pairs[:500]:
        assert kind == "preference"
        term = pair["prompt"].removeprefix("What is ").removesuffix("?")
        assert pair["chosen"].lower() in definitions[term]
        assert pair["rejected"] != pair["chosen"]
        assert pair["rejected"].lower() in definitions[pair["source"]["rejected_term"]]
        assert pair["source"]["rejected_term"].lower() != term.lower()
    assert glossary_preference(glossary, seed=42) == pairs
    other_seed = glossary_preference(glossary, seed=7)
    assert [p["rejected"] for _, p in other_seed[:50]] != [p["rejected"] for _, p in pairs[:50]]


def test_exercise_qa_on_shipped_file(data_root: Path) -> None:
    path = data_root / "openstax_sft" / "anatomy_physiology_2e_exercises_qa.jsonl"
    records = exercise_qa(path)
    assert len(records) == 512
    kind, first = records[0]
    assert (
        kind == "chat"
        and first["messages"][0]["content"]
        == "Name at least three reasons to study anatomy and physiology."
    )
    assert first["source"]["id"] == "anatomy-and-physiology-2e/m45983/fs-id2589947"
    assert len(exercise_qa(path, limit=5)) == 5


def test_builder_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "g.jsonl"
    bad.write_text('{"term": "a", "definition": "b"}\n{"term": "c"}\n')
    with pytest.raises(DataError) as error:
        glossary_qa(bad)
    assert error.value.line == 2 and "definition" in str(error.value)
