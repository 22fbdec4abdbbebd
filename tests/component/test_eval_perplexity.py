"""Held-out perplexity on tiny:llama: every token after the document separator, lm-eval's windows."""

from __future__ import annotations

import math

import pytest

TEXT = (
    "The skeletal system includes all of the bones and joints in the body. Each bone is a "
    "complex living organ made up of many cells, protein fibers and minerals."
)


@pytest.fixture(scope="module")
def scorer(tiny_llama):
    from alloylm.evals.scoring import Scorer
    from alloylm.models.loading import load_causal_lm, load_tokenizer

    return Scorer(load_causal_lm(tiny_llama), load_tokenizer(tiny_llama), batch_size=2, workers=1)


def test_one_window_equals_the_models_own_loss_after_bos(scorer):
    import torch

    tokens = scorer.encode(TEXT, special_tokens=False)
    bos = scorer.tokenizer.bos_token_id
    assert bos is not None and tokens[0] != bos  # this tokenizer does not add BOS itself
    [(nll, count)] = scorer.document_nll([TEXT], max_length=512)
    assert count == len(tokens)  # the first token is scored too
    ids = torch.tensor([[bos, *tokens]])
    with torch.no_grad():
        loss = float(scorer.model(input_ids=ids, labels=ids).loss)
    assert math.exp(nll / count) == pytest.approx(math.exp(loss), rel=1e-4)


def test_several_windows_score_each_token_once_with_lm_eval_context(scorer):
    import torch

    tokens = scorer.encode(TEXT, special_tokens=False)
    n = len(tokens)
    assert n > 20
    max_length = 8
    [(nll, count)] = scorer.document_nll([TEXT], max_length=max_length)
    assert count == n

    # By hand, as lm-eval's loglikelihood_rolling: [BOS] + t[0:7] -> t[0:8]; t[7:15] -> t[8:16];
    # ...; the last window predicts what is left from the 8 tokens before each target.
    def nll_of(inputs: list[int], targets: list[int]) -> float:
        with torch.no_grad():
            logits = scorer.model(input_ids=torch.tensor([inputs])).logits[0].float()
        logprobs = torch.log_softmax(logits[-len(targets) :], dim=-1)
        return -sum(float(logprobs[i, t]) for i, t in enumerate(targets))

    expected = nll_of([scorer.tokenizer.bos_token_id, *tokens[:7]], tokens[:8])
    start = 8
    while start < n:
        end = min(start + 8, n)
        expected += nll_of(tokens[end - 9 : end - 1], tokens[start:end])
        start = end
    assert nll == pytest.approx(expected, rel=1e-4)


def test_two_documents_are_scored_apart(scorer):
    other = "Muscle tissue contracts."
    both = scorer.document_nll([TEXT, other], max_length=16)
    assert both[0] == pytest.approx(scorer.document_nll([TEXT], max_length=16)[0], rel=1e-5)
    assert both[1][1] == len(scorer.encode(other, special_tokens=False))
