"""Votes of the side-by-side page: pairwise records in the format the judge reads."""

from __future__ import annotations

import json

import pytest

from alloylm.chat.webui import SideBySidePage, vote_records


def _outcomes(records):
    return [(r["a"], r["b"], r["winner"]) for r in records]


def test_two_columns_give_one_record_per_vote() -> None:
    for choice, winner in (("A", "a"), ("b", "b"), ("tie", "tie"), ("both_bad", "both_bad")):
        records = vote_records(["x", "y"], choice, prompt="p", answers=["1", "2"], now="T")
        assert _outcomes(records) == [("x", "y", winner)]
        assert records[0]["prompt"] == "p" and records[0]["time"] == "T"
        assert (records[0]["answer_a"], records[0]["answer_b"]) == ("1", "2")


def test_a_best_of_three_beats_each_other_and_a_tie_covers_every_pair() -> None:
    assert _outcomes(vote_records(["x", "y", "z"], "C", prompt="p")) == [
        ("x", "z", "b"),
        ("y", "z", "b"),
    ]  # x against y is not known: no record
    assert _outcomes(vote_records(["x", "y", "z"], "tie", prompt="p")) == [
        ("x", "y", "tie"),
        ("x", "z", "tie"),
        ("y", "z", "tie"),
    ]
    records = vote_records(["w", "x", "y", "z"], "A", prompt="p")
    assert len(records) == 3 and len({r["vote"] for r in records}) == 1


@pytest.mark.parametrize(
    ("models", "choice"),
    [
        (["x"], "A"),
        (["x", "x"], "A"),
        (["x", "y"], "C"),
        (["x", "y"], "draw"),
        (list("vwxyz"), "A"),
    ],
)
def test_bad_votes_are_refused(models, choice) -> None:
    with pytest.raises(ValueError):
        vote_records(models, choice, prompt="p")


def test_posted_votes_are_checked_and_the_judge_reads_the_file(tmp_path) -> None:
    from alloylm.chat.judge import load_votes

    page = SideBySidePage(["x", "y", "z"], votes_file=tmp_path / "v.jsonl")
    with pytest.raises(ValueError, match="not served"):
        page.records_for({"models": ["x", "q"], "winner": "A", "prompt": "p"})
    with pytest.raises(ValueError, match="turn"):
        page.records_for({"models": ["x", "y"], "winner": "A", "prompt": "p", "turn": "1"})
    with pytest.raises(ValueError, match="prompt"):
        page.records_for({"models": ["x", "y"], "winner": "A"})
    page.append(page.records_for({"models": ["y", "x"], "winner": "A", "prompt": "p", "turn": 0}))
    page.append(page.records_for({"models": ["x", "y", "z"], "winner": "both_bad", "prompt": "q"}))
    lines = (tmp_path / "v.jsonl").read_text().splitlines()
    assert (
        json.loads(lines[0])["turn"] == 0 and json.loads(lines[0])["source"] == "alloy serve --ui"
    )
    assert load_votes(tmp_path / "v.jsonl") == [
        ("y", "x", "a"),
        ("x", "y", "both_bad"),
        ("x", "z", "both_bad"),
        ("y", "z", "both_bad"),
    ]
