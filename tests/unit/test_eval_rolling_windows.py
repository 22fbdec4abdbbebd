"""Perplexity windows: lm-evaluation-harness's loglikelihood_rolling, every token scored once."""

from __future__ import annotations

import pytest

from alloylm.evals.scoring import rolling_windows


def test_windows_match_lm_eval_gold():
    # lm-eval tests/test_utils.py::test_get_rolling_token_windows_v1 (34 tokens, max_seq_len 10,
    # context_len 1, prefix -100), after make_disjoint_window: the input is the first list, the
    # targets are the predictions at its last len(targets) positions.
    assert rolling_windows(list(range(34)), -100, 10) == [
        ([-100, 0, 1, 2, 3, 4, 5, 6, 7, 8], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        ([9, 10, 11, 12, 13, 14, 15, 16, 17, 18], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]),
        ([19, 20, 21, 22, 23, 24, 25, 26, 27, 28], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29]),
        ([23, 24, 25, 26, 27, 28, 29, 30, 31, 32], [30, 31, 32, 33]),
    ]


def test_a_short_document_is_one_window_from_the_prefix():
    assert rolling_windows([7, 8, 9], 1, 512) == [([1, 7, 8], [7, 8, 9])]


@pytest.mark.parametrize(("n_tokens", "max_length"), [(1, 1), (5, 1), (9, 4), (12, 4), (100, 7)])
def test_every_token_is_predicted_once_from_the_token_before_it(n_tokens, max_length):
    tokens = list(range(100, 100 + n_tokens))
    windows = rolling_windows(tokens, 0, max_length)
    targets = [token for _, window_targets in windows for token in window_targets]
    assert targets == tokens
    for inputs, window_targets in windows:
        assert len(inputs) <= max_length
        context = ([0, *tokens])[
            : tokens.index(window_targets[-1]) + 1
        ]  # what precedes each target
        assert (
            inputs == context[-len(inputs) :]
        )  # the window is the tokens right before its targets


def test_empty_document_and_bad_length():
    assert rolling_windows([], 0, 8) == []
    with pytest.raises(ValueError, match="max_length"):
        rolling_windows([1], 0, 0)
