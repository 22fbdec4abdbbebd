"""Each loader on a few lines of the shipped files, the study's layout, mappings and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alloylm.errors import DataError
from alloylm.evals.loaders import load_documents, load_items, split_inline_options
from alloylm.evals.runner import TaskSpec, prepare_task


def head(source: Path, target: Path, lines: int) -> Path:
    with open(source, encoding="utf-8") as handle:
        target.write_text("".join(handle.readline() for _ in range(lines)), encoding="utf-8")
    return target


def test_mmlu_csv_without_header(data_root, tmp_path):
    report = load_items(
        head(
            data_root / "mmlu_stem/college_biology_test.csv",
            tmp_path / "college_biology_test.csv",
            3,
        )
    )
    assert [item.gold for item in report.items] == ["C", "C", "A"]
    assert report.items[2].choices == ("amnion", "chorion", "allantois", "yolk sac")
    assert report.subject == "college biology" and not report.skipped


def test_bigbench_converted_jsonl(test_data):
    report = load_items(test_data / "bigbench_science/physics_mcq.jsonl")
    assert report.items[0].id == "physics/0" and report.items[0].gold == "A"
    assert report.items[1].choices[2] == "E = k * q / r ^ 2" and report.items[1].gold == "C"


def test_bigbench_original_task_json(test_data):
    for name, gold in (
        ("physics.task.json", "A"),
        ("ni_subtask047_science_questions.task.json", "D"),
    ):
        report = load_items(test_data / "bigbench_science/original" / name)
        assert len(report.items) == 2 and report.items[0].gold == gold
    # target-style items carry their options inside the text: "(A) ... (D) ..."
    assert report.items[0].choices[3] == "the vibrations of the string?"
    assert report.items[0].question.endswith("sound is produced by")


def test_mascqa_layout_mcq_numeric_and_void(test_data):
    # hand-written items in MaScQA's layout (MaScQA itself is CC BY-NC-SA: not in the project)
    report = load_items(test_data / "mascqa_format/items.jsonl")
    mcq, numeric = report.items
    assert mcq.kind == "mcq" and mcq.gold == "A" and mcq.category == "Mechanical"
    assert mcq.question == "Which of the following tissues stores calcium in the human body?"
    assert mcq.choices == ("Bone", "Tendon", "Cartilage", "Skin")  # the stem, options apart
    assert numeric.kind == "numeric" and numeric.answer_ranges == ((0.49, 0.51),)
    assert len(report.skipped) == 1 and "items.jsonl:3: void" in report.skipped[0]


def test_openstax_jsonl(data_root, tmp_path):
    report = load_items(
        head(data_root / "openstax_mcq/anatomy_physiology_2e_mcq.jsonl", tmp_path / "ap.jsonl", 3)
    )
    assert len(report.items) == 3 and report.items[0].gold == "C"
    assert report.items[0].category == "An Introduction to the Human Body"


def test_study_layout_without_mapping(tmp_path):
    path = tmp_path / "spider_silk.csv"
    path.write_text(
        "id,question_type,Question,Answer,Category\n"
        '1,MC,"Which protein dominates dragline silk? A) Spidroin B) Keratin C) Collagen D) Actin",A,proteins\n'
        "2,TF,Spider silk is tougher than Kevlar.,True,mechanics\n"
        '3,MC,"Silk fibres are spun from? A) Glands B) Legs",B),biology\n',
        encoding="utf-8",
    )
    report = load_items(path)
    mc, tf, second = report.items
    assert mc.choices == ("Spidroin", "Keratin", "Collagen", "Actin") and mc.gold == "A"
    assert mc.question == "Which protein dominates dragline silk?" and mc.category == "proteins"
    assert tf.kind == "true_false" and tf.gold == "True"
    assert second.gold == "B"


def test_mapping_for_another_layout(tmp_path):
    path = tmp_path / "custom.jsonl"
    path.write_text(
        json.dumps({"Stem": "2+2?", "o1": "3", "o2": "4", "Key": "B", "Area": "maths"}) + "\n"
    )
    mapping = {"question": "Stem", "choices": ["o1", "o2"], "answer": "Key", "category": "Area"}
    (item,) = load_items(path, mapping).items
    assert item.choices == ("3", "4") and item.gold == "B" and item.category == "maths"


def test_bad_records_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"question": "ok?", "choices": ["a", "b"], "answer": "A"}\n'
        '{"question": "no key?", "choices": ["a", "b"]}\n'
        '{"question": "out of range?", "choices": ["a", "b"], "answer": "D"}\n'
        "{not json\n",
        encoding="utf-8",
    )
    report = load_items(path)
    assert len(report.items) == 1
    assert [s.split(": ", 1)[0] for s in report.skipped] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "no answer key" in report.skipped[0] and "outside the 2 options" in report.skipped[1]
    assert "invalid JSON" in report.skipped[2]


def test_zero_scorable_items_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text('{"question": "no key?", "choices": ["a", "b"]}\n')
    with pytest.raises(DataError, match="no scorable"):
        prepare_task(TaskSpec(name="empty", path=str(path)))


def test_inline_options_need_consecutive_letters():
    assert split_inline_options("Vitamin A) is fat soluble") == ("Vitamin A) is fat soluble", [])
    assert split_inline_options("Q (A) x (B) y") == ("Q", ["x", "y"])


def test_documents_for_perplexity(data_root, tmp_path):
    docs = load_documents(
        head(data_root / "openstax_corpus/anatomy_physiology_2e.jsonl", tmp_path / "h.jsonl", 2)
    )
    assert len(docs) == 2 and all(len(doc) > 100 for doc in docs)
    (tmp_path / "notes.txt").write_text("Bone is a connective tissue.")
    assert load_documents(tmp_path / "notes.txt") == ["Bone is a connective tissue."]


def test_mapping_on_a_csv_with_its_own_header_and_a_choices_cell(tmp_path):
    path = tmp_path / "own.csv"
    path.write_text(
        'Stem,Options,Key\n"Hardest natural fibre?","silk|wool|cotton",A\n', encoding="utf-8"
    )
    (item,) = load_items(path, {"question": "Stem", "choices": "Options", "answer": "Key"}).items
    assert item.choices == ("silk", "wool", "cotton") and item.gold == "A"


def test_a_long_text_splits_into_scoring_units(tmp_path):
    # issue 23 defect 5: a held-out file that is not JSONL was one document: no interval. Cut at
    # blank lines into units of >= 10 characters: "aaaa" + "bbbbbb" (10), "cccccccccccc" (12),
    # and the short tail "dd" joins the last unit
    from alloylm.evals.loaders import load_documents, split_units

    text = "aaaa\n\nbbbbbb\n\ncccccccccccc\n\n\ndd\n"
    assert split_units(text, 10) == ["aaaa\n\nbbbbbb", "cccccccccccc\n\ndd"]
    assert split_units("short", 10) == ["short"]
    path = tmp_path / "heldout.txt"
    path.write_text(text)
    assert load_documents(path) == [text]  # one unit unless asked
    assert len(load_documents(path, unit_chars=10)) == 2
