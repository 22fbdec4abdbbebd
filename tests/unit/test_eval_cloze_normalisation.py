"""Cloze scoring with fixed log-probabilities: lm-eval's acc_norm, computed by hand.

lm-evaluation-harness (api/task.py, multiple_choice `acc_norm`) divides each option's summed
log-likelihood by the option text's length in characters (without the space in front) and
takes the argmax. A stub scorer returns fixed sums, so the numbers below are exact.
"""

from __future__ import annotations

import pytest

from alloylm.evals.protocol import ClozeProtocol, PromptSettings
from alloylm.evals.tasks import Item


class FixedScorer:
    """Returns given summed log-probs per option; records what it was asked to score."""

    tokenizer = None
    pad_id = 0

    def __init__(self, totals: list[list[float]]) -> None:
        self.totals = totals
        self.asked: list[tuple[list[int], list[list[int]]]] = []

    def encode(self, text: str, *, special_tokens: bool) -> list[int]:
        return [ord(character) for character in text]  # one "token" per character

    def continuation_logprobs_many(self, questions, progress):
        self.asked.extend(questions)
        return [list(row) for row in self.totals]


def _run(choices, totals, answer_index=0):
    item = Item(
        id="q", kind="mcq", question="Which tissue?", choices=choices, answer_index=answer_index
    )
    scorer = FixedScorer([totals])
    [prediction] = ClozeProtocol().run(
        scorer, [item], PromptSettings(template="plain"), lambda _: None
    )
    return prediction, scorer


def test_sums_are_divided_by_character_length_before_the_argmax():
    # bone: -4.0 / 4 = -1.0; cartilage tissue: -8.0 / 16 = -0.5; fat: -6.0 / 3 = -2.0
    prediction, _ = _run(("bone", "cartilage tissue", "fat"), [-4.0, -8.0, -6.0], answer_index=1)
    assert prediction["scores"] == [-1.0, -0.5, -2.0]
    assert prediction["pred"] == "B" and prediction["correct"]  # the raw sums would pick A


def test_the_length_excludes_the_space_in_front_but_counts_inner_spaces():
    # "a b": 3 characters -> -3.0 / 3 = -1.0; "abcd": -3.6 / 4 = -0.9 (wins)
    prediction, scorer = _run(("a b", "abcd"), [-3.0, -3.6])
    assert prediction["scores"] == pytest.approx([-1.0, -0.9])
    assert prediction["pred"] == "B" and not prediction["correct"]
    [(prefix, continuations)] = scorer.asked
    assert [bytes(c).decode() for c in continuations] == [" a b", " abcd"]  # scored with the space
    assert bytes(prefix).decode() == "Question: Which tissue?\nAnswer:"


def test_ties_go_to_the_first_option():
    prediction, _ = _run(("ab", "cd"), [-1.0, -1.0])
    assert prediction["scores"] == [-0.5, -0.5] and prediction["pred"] == "A"
