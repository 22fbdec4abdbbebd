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


def test_shipped_benchmarks_catch_their_own_questions(shared_data: Path) -> None:
    path = shared_data / "openstax_mcq" / "anatomy_physiology_2e_mcq.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    check = Decontaminator([path, shared_data / "mmlu_stem" / "anatomy_test.csv"])
    assert check.is_contaminated(first["question"])
    assert not check.is_contaminated(
        "What is anatomy? Science that studies the form and composition of the body's structures"
    )
