"""Holdout keys that are list or dict fields, or the text field itself (issue 11, defect 7)."""

from __future__ import annotations

import json

from alloylm.data.sources import DataSource, load_chat_examples, load_text_docs
from alloylm.data.split import is_heldout, key_text


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _docs(n=40):
    return [
        {
            "text": f"Document {i} about tissue number {i}.",
            "authors": ["Betts", f"Young {i % 4}"],
            "meta": {"unit": i % 5},
        }
        for i in range(n)
    ]


def test_a_list_field_groups_records_with_equal_lists(tmp_path):
    path = _write(tmp_path / "docs.jsonl", _docs())
    loaded = load_text_docs(
        DataSource(path=str(path), holdout={"fraction": 0.5, "seed": 3, "key": "authors"})
    )
    heldout_texts = {doc.text for doc in loaded.heldout}
    for row in _docs():
        expected = is_heldout(key_text(row["authors"]), 0.5, 3)
        assert (row["text"] in heldout_texts) == expected
    assert loaded.heldout and loaded.records


def test_a_dict_field_is_hashed_as_sorted_json(tmp_path):
    path = _write(tmp_path / "docs.jsonl", _docs())
    loaded = load_text_docs(
        DataSource(path=str(path), holdout={"fraction": 0.4, "seed": 0, "key": "meta"})
    )
    held = {
        f"Document {i} about tissue number {i}."
        for i in range(40)
        if is_heldout(json.dumps({"unit": i % 5}, sort_keys=True), 0.4, 0)
    }
    assert {doc.text for doc in loaded.heldout} == held


def test_the_text_field_as_key_is_the_same_split_as_no_key(tmp_path):
    path = _write(tmp_path / "docs.jsonl", _docs())
    by_text = load_text_docs(
        DataSource(path=str(path), holdout={"fraction": 0.3, "seed": 1, "key": "text"})
    )
    default = load_text_docs(DataSource(path=str(path), holdout={"fraction": 0.3, "seed": 1}))
    assert [d.text for d in by_text.heldout] == [d.text for d in default.heldout]
    assert by_text.heldout and by_text.records


def test_chat_messages_as_key(tmp_path):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Question {i}?"},
                {"role": "assistant", "content": f"Answer {i}."},
            ]
        }
        for i in range(30)
    ]
    path = _write(tmp_path / "chat.jsonl", rows)
    loaded = load_chat_examples(
        DataSource(path=str(path), holdout={"fraction": 0.5, "seed": 0, "key": "messages"})
    )
    assert loaded.heldout and loaded.records
    assert len(loaded.heldout) + len(loaded.records) == 30
    held = {ex.messages[0]["content"] for ex in loaded.heldout}
    expected = {
        row["messages"][0]["content"]
        for row in rows
        if is_heldout(key_text(row["messages"]), 0.5, 0)
    }
    assert held == expected
