"""Preference loaders: the layouts we read and the bad records we skip (with file and line)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from alloylm.data import preference
from alloylm.errors import DataError


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_study_layout_with_message_lists_and_strings(tmp_path: Path) -> None:
    records = [
        {
            "prompt": [{"role": "user", "content": "What is silk?"}],
            "chosen": [{"role": "assistant", "content": "A protein fibre."}],
            "rejected": [{"role": "assistant", "content": "A metal."}],
        },
        {
            "prompt": "Define osteon.",
            "chosen": "Unit of compact bone.",
            "rejected": "A nerve cell.",
        },
    ]
    path = _write_jsonl(tmp_path / "p.jsonl", [json.dumps(r) for r in records])
    pairs, report = preference.read_preference_file(path)
    assert report.summary() == {"read": 2, "kept": 2, "truncated_prompts": 0, "skipped": {}}
    assert pairs[0].prompt == ({"role": "user", "content": "What is silk?"},)
    assert pairs[1].chosen == ({"role": "assistant", "content": "Unit of compact bone."},)
    assert pairs[1].origin.endswith("p.jsonl:2")


def test_implicit_prompt_is_split_off(tmp_path: Path) -> None:
    user = {"role": "user", "content": "Q?"}
    record = {
        "chosen": [user, {"role": "assistant", "content": "good"}],
        "rejected": [user, {"role": "assistant", "content": "bad"}],
    }
    pairs, _ = preference.read_preference_file(
        _write_jsonl(tmp_path / "p.jsonl", [json.dumps(record)])
    )
    assert pairs[0].prompt == (user,)
    assert pairs[0].chosen == ({"role": "assistant", "content": "good"},)
    # a prompt field plus chosen lists that repeat it: the repeat is removed
    record["prompt"] = [user]
    pairs, _ = preference.read_preference_file(
        _write_jsonl(tmp_path / "q.jsonl", [json.dumps(record)])
    )
    assert pairs[0].rejected == ({"role": "assistant", "content": "bad"},)


def test_bad_records_are_reported_with_line_and_counted(tmp_path: Path) -> None:
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    lines = [
        json.dumps(good),
        json.dumps({"prompt": "p", "chosen": "a"}),  # 2 missing rejected
        json.dumps({"prompt": "p", "chosen": "  ", "rejected": "b"}),  # 3 empty chosen
        json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}),  # 4 equal
        "{not json",  # 5
        "",  # blank lines are not records
        json.dumps(
            {"prompt": "p", "chosen": "a", "rejected": [{"role": "assistant"}]}
        ),  # 7 bad message
        json.dumps(good),
    ]
    path = _write_jsonl(tmp_path / "bad.jsonl", lines)
    pairs, report = preference.read_preference_file(path)
    assert len(pairs) == 2 and report.kept == 2 and report.read == 7
    where = {(issue.line, issue.reason.split(":")[0]) for issue in report.issues}
    assert where == {
        (2, "missing field"),
        (3, "empty chosen"),
        (4, "chosen equals rejected"),
        (5, "invalid JSON"),
        (7, "bad messages"),
    }
    assert all(issue.file == str(path) for issue in report.issues)
    assert report.counts()["missing field"] == 1
    assert any("bad.jsonl:2" in line for line in report.log_lines())


def test_hh_transcripts_split_into_prompt_and_replies() -> None:
    chosen = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant: Sure, here is how."
    rejected = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant: No."
    pair = preference.parse_record({"chosen": chosen, "rejected": rejected})
    assert pair.prompt == (
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "help me"},
    )
    assert pair.chosen == ({"role": "assistant", "content": "Sure, here is how."},)
    assert pair.rejected == ({"role": "assistant", "content": "No."},)


def test_hh_replies_sharing_a_first_word_still_split_at_the_turn() -> None:
    # the common character prefix runs into the replies ("Sure"); the split is at the last turn marker
    pair = preference.parse_record(
        {
            "chosen": "\n\nHuman: q\n\nAssistant: Sure thing",
            "rejected": "\n\nHuman: q\n\nAssistant: Sure, no",
        }
    )
    assert pair.chosen[0]["content"] == "Sure thing" and pair.rejected[0]["content"] == "Sure, no"


def test_hh_excerpt_loads_and_skips_its_empty_replies(test_data: Path) -> None:
    path = test_data / "hh_rlhf" / "harmless-base-test-excerpt.jsonl"
    pairs, report = preference.read_preference_file(path)
    assert report.read == 8
    # its last 2 records have an empty chosen reply (see tests/data/hh_rlhf/SOURCE.md)
    assert report.counts() == {"empty chosen": 2}
    assert len(pairs) == 6 and report.kept == 6
    assert all(p.prompt[-1]["role"] == "user" for p in pairs)


def test_gzip_folder_and_stage_output(tmp_path: Path) -> None:
    record = {"prompt": "p", "chosen": "a", "rejected": "b"}
    gz = tmp_path / "p.jsonl.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write(json.dumps(record) + "\n")
    assert len(preference.read_preference_file(gz)[0]) == 1
    folder = tmp_path / "folder"
    folder.mkdir()
    _write_jsonl(folder / "a.jsonl", [json.dumps(record)] * 3)
    (folder / "README.md").write_text("not data")
    assert len(preference.read_preference_file(folder)[0]) == 3
    assert len(preference.read_preference_file(folder, limit=2)[0]) == 2
    # a data stage's artifact: the file named in alloy.json outputs, not its other files
    stage = tmp_path / "distill"
    stage.mkdir()
    _write_jsonl(stage / "preference.jsonl", [json.dumps(record)] * 2)
    _write_jsonl(stage / "chat.jsonl", [json.dumps({"messages": []})])
    outputs = {"preference": "preference.jsonl", "chat": "chat.jsonl"}
    (stage / "alloy.json").write_text(json.dumps({"outputs": outputs}))
    pairs, report = preference.read_preference_file(stage)
    assert len(pairs) == 2 and not report.issues


def test_sources_mix_by_weight(tmp_path: Path) -> None:
    def records(prefix: str) -> list[str]:
        return [
            json.dumps({"prompt": f"{prefix}{i}", "chosen": "a", "rejected": "b"}) for i in range(4)
        ]

    a = _write_jsonl(tmp_path / "a.jsonl", records("p"))
    b = _write_jsonl(tmp_path / "b.jsonl", records("q"))
    sources = [
        preference.PreferenceSource(path=str(a), weight=2.0),
        preference.PreferenceSource(path=str(b), weight=0.5),
    ]
    pairs, report, details = preference.load_preference_sources(sources, seed=1)
    assert len(pairs) == 8 + 2 and [d["mixed_pairs"] for d in details] == [8, 2]
    assert report.read == 8


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        preference.read_preference_file(tmp_path / "nope.jsonl")
