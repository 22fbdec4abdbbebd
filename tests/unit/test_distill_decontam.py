"""Decontamination: n-gram overlap with benchmark questions and options (JSONL and MMLU CSV)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alloylm.distill.decontam import Decontaminator, ngrams
from alloylm.errors import DataError


def test_ngrams_hand_computed() -> None:
    assert ngrams("A b c, d!", 3) == {("a", "b", "c"), ("b", "c", "d")}
    assert ngrams("a b", 3) == set()


def test_overlap_with_question_or_option_is_contaminated(tmp_path: Path) -> None:
    mcq = tmp_path / "mcq.jsonl"
    row = {
        "question": "Which of the following specialties might focus on studying all of the structures of the ankle and foot?",
        "choices": [
            "microscopic anatomy",
            "regional anatomy",
            "the study of bone tissue under a light microscope",
        ],
    }
    mcq.write_text(json.dumps(row) + "\n")
    csv = tmp_path / "mmlu.csv"
    csv.write_text(
        '"A dished face profile is often associated with what condition here",opt one,opt two,B\n'
    )
    check = Decontaminator([mcq, csv], n=8)
    assert check.is_contaminated(
        "Quiz: which of the following specialties might focus on studying all of them?"
    )
    assert check.is_contaminated(
        "Note: the study of bone tissue under a light microscope is histology."
    )  # option, 10 words
    assert check.is_contaminated(
        "a dished face profile is often associated with what"
    )  # CSV question
    assert not check.is_contaminated("Regional anatomy studies the ankle and foot together.")
    assert not check.is_contaminated(
        "opt two B"
    )  # short options and the answer letter are not indexed as n-grams


def test_short_options_of_four_or_more_words_match_as_phrases(tmp_path: Path) -> None:
    mcq = tmp_path / "mcq.jsonl"
    mcq.write_text(
        json.dumps({"question": "Q?", "choices": ["loss of taste and lacrimation", "organ"]}) + "\n"
    )
    check = Decontaminator([mcq], n=8)
    assert check.is_contaminated("Symptoms include loss of taste and lacrimation.")
    assert not check.is_contaminated("The heart is an organ.")


def test_missing_benchmark_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="benchmark file not found"):
        Decontaminator([tmp_path / "nope.jsonl"])


def test_shipped_benchmarks_catch_their_own_questions(data_root: Path) -> None:
    path = data_root / "openstax_mcq" / "anatomy_physiology_2e_mcq.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    check = Decontaminator([path, data_root / "mmlu_stem" / "anatomy_test.csv"])
    assert check.is_contaminated(first["question"])
    assert not check.is_contaminated(
        "What is anatomy? Science that studies the form and composition of the body's structures"
    )


def test_long_raw_text_loses_only_its_contaminated_lines(tmp_path: Path) -> None:
    from alloylm.distill.engine import _filter
    from alloylm.stages.distill import Config

    mcq = tmp_path / "mcq.jsonl"
    mcq.write_text(
        json.dumps(
            {"question": "Which bone connects the ribs to the spine in the thoracic region?"}
        )
        + "\n"
    )
    raw = "Bones support the body.\nWhich bone connects the ribs to the spine in the thoracic region? The vertebrae.\nMuscles move bones."
    records = [
        ("text", {"text": raw, "source": {"generator": "raw"}}),
        (
            "text",
            {
                "text": "Summary: which bone connects the ribs to the spine in the thoracic region",
                "source": {"generator": "summary"},
            },
        ),
        ("text", {"text": "Muscles move bones.", "source": {"generator": "summary"}}),
        ("text", {"text": "Muscles move bones.", "source": {"generator": "summary"}}),
    ]
    cfg = Config(kind="distill", paths=["x"], decontaminate={"files": [str(mcq)]})
    kept, dropped = _filter(records, cfg, log=lambda m: None)
    assert kept[0][1]["text"] == "Bones support the body.\nMuscles move bones."
    assert [r["text"] for _, r in kept[1:]] == ["Muscles move bones."]
    assert dropped == {"duplicate": 1, "contaminated": 1, "contaminated_lines": 1}
