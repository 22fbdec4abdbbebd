"""Parsing teacher answers: Q&A pairs, the structured record (JSON validation), prompt templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from alloylm.distill.generators import (
    ItemRejected,
    generate_preference,
    generate_structured,
    parse_qa_pairs,
    validate_structured,
)
from alloylm.distill.ingest import Chunk, Document
from alloylm.distill.prompts import BUILTIN_DIR, load_template

VALID = (
    '{"Title": "Silk", "Insights": ["strong"], "Facts": "one fact", "Details": [], "Comparisons": ["vs steel"],'
    ' "Questions": ["Is silk strong?"], "Answers": ["Yes."]}'
)


def test_parse_qa_pairs_accepts_common_layouts() -> None:
    text = "Q: What is bone?\nA: A connective\n tissue.\n\nQ2: Where is cartilage?\nA2: In joints.\nQ: orphan"
    assert parse_qa_pairs(text) == [
        ("What is bone?", "A connective tissue."),
        ("Where is cartilage?", "In joints."),
    ]
    assert parse_qa_pairs("**Question 1:** Why?\n**Answer 1:** Because.") == [("Why?", "Because.")]
    assert parse_qa_pairs("no pairs at all") == []


def test_structured_record_validation() -> None:
    record = validate_structured("Here you go:\n```json\n" + VALID + "\n```")
    assert record.Title == "Silk" and record.Facts == ["one fact"]
    with pytest.raises(ItemRejected, match="invalid_json"):
        validate_structured("Title: Silk, no JSON here")
    with pytest.raises(ItemRejected, match="invalid_json"):
        validate_structured('{"Title": "Silk", "Insights": [')
    with pytest.raises(ItemRejected, match="invalid_schema"):
        validate_structured('{"Title": "Silk"}')  # keys missing
    with pytest.raises(ItemRejected, match="invalid_schema"):
        validate_structured(
            VALID.replace('"Answers": ["Yes."]', '"Answers": []')
        )  # unpaired question
    with pytest.raises(ItemRejected, match="invalid_schema"):
        validate_structured(VALID[:-1] + ', "Extra": 1}')


def test_structured_generator_gives_cpt_text_and_chat_with_source() -> None:
    doc = Document("paper1", "Silk paper", "text", "papers/silk.pdf")
    records = generate_structured(doc, lambda name, variables, attempt: VALID, 0)
    kinds = [kind for kind, _ in records]
    assert kinds == ["text", "chat"]
    assert (
        records[0][1]["text"].startswith("Title: Silk")
        and "Question: Is silk strong?" in records[0][1]["text"]
    )
    assert records[1][1]["source"] == {
        "generator": "structured",
        "doc": "paper1",
        "file": "papers/silk.pdf",
    }


def test_preference_generator_asks_for_a_wrong_answer() -> None:
    chunk = Chunk("d#0", "d", "Doc", "Bone", "## Bone\nBone is mineralised.", 4)
    asked = []

    def ask(name: str, variables: dict, attempt: int) -> str:
        asked.append((name, variables.get("question")))
        return (
            "Q: What is bone made of?\nA: Mineralised matrix."
            if name == "preference_question"
            else "Pure iron."
        )

    [(kind, record)] = generate_preference(chunk, ask, 0)
    assert kind == "preference"
    assert record["prompt"] == "What is bone made of?" and record["chosen"] == "Mineralised matrix."
    assert record["rejected"] == "Pure iron." and record["source"]["chunk"] == "d#0"
    assert asked[1] == ("preference_rejected", "What is bone made of?")
    rejected_template = load_template("preference_rejected").source
    assert "scientifically wrong" in rejected_template


def test_templates_render_messages_and_version_changes_with_edits(tmp_path: Path) -> None:
    builtin = load_template("qa")
    messages = builtin.render(title="T", section="S", text="Body text.", n_pairs=2)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert (
        "Body text." in messages[1]["content"]
        and "2 question-answer pairs" in messages[1]["content"]
    )
    assert builtin.version.startswith("qa:v1:")
    edited = (BUILTIN_DIR / "qa.j2").read_text().replace("exam-quality", "short")
    (tmp_path / "qa.j2").write_text(edited)
    mine = load_template("qa", tmp_path)
    assert (
        mine.path == tmp_path / "qa.j2"
        and mine.version.startswith("qa:v1:")
        and mine.version != builtin.version
    )
    assert (
        load_template("summary", tmp_path).path.parent == BUILTIN_DIR
    )  # falls back to the built-in
