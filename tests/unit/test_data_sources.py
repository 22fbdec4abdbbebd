"""Loaders on a few lines of the shipped files, other formats, and located bad-record reports."""

import json

import pytest

from alloylm.data.records import ChatExample, TextDoc
from alloylm.data.sources import (
    DataSource,
    detect_data_kind,
    heldout_rows,
    load_chat_examples,
    load_text_docs,
    source_files,
)
from alloylm.errors import DataError


def test_openstax_corpus_loads_as_text(data_root):
    path = data_root / "openstax_corpus" / "anatomy_physiology_2e.jsonl"
    loaded = load_text_docs(DataSource(path=str(path), limit=3))
    assert len(loaded.records) == 3 and loaded.report.bad == 0
    doc = loaded.records[0]
    assert isinstance(doc, TextDoc) and doc.text and doc.line == 1
    assert {"title", "module", "chapter"} <= set(doc.meta)


def test_openstax_corpus_folder_skips_source_md(data_root):
    files = source_files(data_root / "openstax_corpus")
    assert files and all(f.suffix == ".jsonl" for f in files)


def test_exercises_load_as_chat_and_glossary_through_a_template(data_root):
    qa = load_chat_examples(
        DataSource(
            path=str(data_root / "openstax_sft" / "anatomy_physiology_2e_exercises_qa.jsonl"),
            limit=2,
        )
    )
    first = qa.records[0]
    assert isinstance(first, ChatExample)
    assert [m["role"] for m in first.messages] == ["user", "assistant"]
    glossary = load_chat_examples(
        DataSource(
            path=str(data_root / "openstax_sft" / "anatomy_physiology_2e_glossary.jsonl"),
            template={"user": "What is {term}?", "assistant": "{definition}"},
            limit=2,
        )
    )
    assert glossary.records[0].messages[0]["content"] == "What is anatomy?"


def test_detect_data_kind(data_root, test_data):
    assert detect_data_kind(data_root / "openstax_corpus") == "text"
    sft = data_root / "openstax_sft"
    assert detect_data_kind(sft / "anatomy_physiology_2e_exercises_qa.jsonl") == "chat"
    glossary = sft / "anatomy_physiology_2e_glossary.jsonl"
    assert detect_data_kind(glossary) == "unknown"
    assert (
        detect_data_kind(glossary, template={"user": "{term}", "assistant": "{definition}"})
        == "chat"
    )
    assert detect_data_kind(test_data / "hh_rlhf") == "preference"
    assert detect_data_kind(data_root / "openstax_mcq") == "benchmark"


def test_sft_given_raw_text_reports_why(data_root):
    with pytest.raises(DataError, match="not a chat record"):
        load_chat_examples(
            DataSource(
                path=str(data_root / "openstax_corpus" / "anatomy_physiology_2e.jsonl"), limit=2
            )
        )


def test_bad_records_are_counted_with_file_and_line(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        json.dumps({"text": "good one"})
        + "\n"
        + "{not json\n"
        + json.dumps({"text": "good two"})
        + "\n"
        + json.dumps({"title": "no text"})
        + "\n"
        + "\n"
        + json.dumps({"text": "   "})
        + "\n"
    )
    loaded = load_text_docs(DataSource(path=str(path)))
    assert [d.text for d in loaded.records] == ["good one", "good two"]
    assert loaded.report.bad == 3
    assert loaded.report.problems[0].startswith(f"{path}:2: invalid JSON")
    assert loaded.report.problems[1].startswith(f"{path}:4: no 'text' field")
    assert loaded.report.problems[2].startswith(f"{path}:6:")


def test_a_source_without_any_usable_record_is_an_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match="no usable records") as error:
        load_text_docs(DataSource(path=str(path)))
    assert "bad.jsonl:1" in str(error.value)


def test_csv_parquet_txt_md(tmp_path):
    (tmp_path / "qa.csv").write_text('question,answer\n"What, exactly?",This.\nWhy?,Because.\n')
    csv_loaded = load_chat_examples(DataSource(path=str(tmp_path / "qa.csv")))
    assert csv_loaded.records[0].messages[0]["content"] == "What, exactly?"
    assert csv_loaded.records[1].line == 3

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["alpha", "beta"]}), tmp_path / "docs.parquet")
    assert [
        d.text for d in load_text_docs(DataSource(path=str(tmp_path / "docs.parquet"))).records
    ] == [
        "alpha",
        "beta",
    ]

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# Bone\nOsteocytes live in lacunae.")
    (notes / "b.txt").write_text("Cartilage has no blood vessels.")
    (notes / "README.md").write_text("not data")
    docs = load_text_docs(DataSource(path=str(notes))).records
    assert [d.meta["title"] for d in docs] == ["a", "b"]


def test_template_missing_field_is_reported(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(
        json.dumps({"term": "bone", "definition": "tissue", "module": "m1"})
        + "\n"
        + json.dumps({"term": "cartilage", "module": "m2"})
        + "\n"
    )
    loaded = load_chat_examples(
        DataSource(
            path=str(path), template={"user": "What is {term}?", "assistant": "{definition}"}
        )
    )
    assert loaded.report.bad == 1 and "needs field(s) definition" in loaded.report.problems[0]


def test_holdout_is_recorded_and_written(data_root):
    source = DataSource(
        path=str(data_root / "openstax_corpus" / "anatomy_physiology_2e.jsonl"),
        holdout={"fraction": 0.2, "seed": 0, "key": "module"},
    )
    loaded = load_text_docs(source)
    again = load_text_docs(source)
    assert [d.meta["module"] for d in loaded.heldout] == [d.meta["module"] for d in again.heldout]
    assert loaded.heldout and loaded.records
    held_modules = {d.meta["module"] for d in loaded.heldout}
    assert not held_modules & {d.meta["module"] for d in loaded.records}
    rows = heldout_rows([loaded])
    assert rows[0]["text"] and rows[0]["module"] in held_modules
    assert loaded.details()["holdout"]["heldout_records"] == len(loaded.heldout)
