"""The shared JSONL reader: line numbers, blank lines, gzip, invalid JSON named by file and line."""

from __future__ import annotations

import gzip

import pytest

from alloylm.data.jsonl import iter_jsonl
from alloylm.errors import DataError


def test_line_numbers_skip_blank_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2})]


def test_gzip(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('{"a": 1}\n')
    assert list(iter_jsonl(path)) == [(1, {"a": 1})]


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(DataError, match=r"a.jsonl:2"):
        list(iter_jsonl(path))
