"""The pure pieces of the one generation loop, with hand-computed numbers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from alloylm.errors import ConfigError
from alloylm.generation.sampling import (
    PRESETS,
    JsonObjectScanner,
    SamplingParams,
    apply_repetition_penalty,
    filter_top_k,
    filter_top_p,
    find_stop,
    partial_stop_length,
    preset,
    stop_token_ids,
)

INF = float("-inf")


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5])
    # tokens 0 and 1 were seen (twice for 0: once counts), penalty 2: 2 -> 1, -1 -> -2, 0.5 kept
    out = apply_repetition_penalty(logits, [0, 1, 0], 2.0)
    assert out.tolist() == [1.0, -2.0, 0.5]
    assert logits.tolist() == [2.0, -1.0, 0.5]  # the input is not changed in place
    assert apply_repetition_penalty(logits, [0], 1.0) is logits


def test_top_k_keeps_the_k_largest() -> None:
    assert filter_top_k(torch.tensor([1.0, 3.0, 2.0, 0.0]), 2).tolist() == [INF, 3.0, 2.0, INF]
    assert filter_top_k(torch.tensor([1.0, 3.0]), 0).tolist() == [1.0, 3.0]  # 0: off


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = torch.tensor([0.3, 0.5, 0.05, 0.15])
    # sorted: 0.5, 0.3 (0.8 >= 0.75: stop), so 0.15 and 0.05 go
    kept = filter_top_p(probs.log(), 0.75)
    assert [math.isinf(v) for v in kept.tolist()] == [False, False, True, True]
    # p below the top probability still keeps the top token
    only = filter_top_p(probs.log(), 0.1)
    assert [math.isinf(v) for v in only.tolist()] == [True, False, True, True]


def test_top_k_and_top_p_match_transformers_warpers() -> None:
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(0))
    ids = torch.zeros((1, 1), dtype=torch.long)
    assert torch.equal(filter_top_k(logits[0], 7), TopKLogitsWarper(7)(ids, logits.clone())[0])
    assert torch.equal(filter_top_p(logits[0], 0.6), TopPLogitsWarper(0.6)(ids, logits.clone())[0])


def test_stop_strings_and_the_held_back_tail() -> None:
    assert find_stop("bone has ATP inside", ["ATP"]) == 9
    assert find_stop("bone", ["ATP"]) is None
    assert find_stop("a STOP b END", ["END", "STOP"]) == 2  # the earliest wins
    assert partial_stop_length("makes AT", ["ATP"]) == 2  # "AT" may become "ATP"
    assert partial_stop_length("makes A", ["ATP", "Ax"]) == 1
    assert partial_stop_length("makes", ["ATP"]) == 0


def test_json_object_scanner_ignores_braces_inside_strings() -> None:
    text = '  {"a": "}", "b": [1, {"c": "\\"}"}]} then more'
    scanner = JsonObjectScanner()
    for start in range(0, len(text), 3):  # fed in pieces, as tokens arrive
        scanner.feed(text[start : start + 3])
    assert scanner.end == text.index("} then") + 1
    bad = JsonObjectScanner()
    bad.feed(" x{}")
    assert bad.bad_start and bad.end is None


def test_presets_hold_the_study_settings() -> None:
    study = PRESETS["study"]
    assert (study.top_k, study.top_p, study.repetition_penalty, study.max_new_tokens) == (
        512,
        0.9,
        1.1,
        1024,
    )
    assert PRESETS["greedy"].greedy and not study.greedy
    assert preset("study", seed=3).seed == 3 and preset("study", seed=3).top_k == 512
    with pytest.raises(ConfigError, match="did you mean 'study'"):
        preset("stuyd")


@pytest.mark.parametrize(
    "bad",
    [
        {"max_new_tokens": 0},
        {"temperature": -0.1},
        {"top_p": 0.0},
        {"top_k": -1},
        {"repetition_penalty": 0.0},
    ],
)
def test_sampling_params_refuse_out_of_range_values(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingParams(**bad)


def test_one_stop_rule_unites_generation_config_and_tokenizer_eos() -> None:
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[5, 7]))
    assert stop_token_ids(model, SimpleNamespace(eos_token_id=2)) == {2, 5, 7}
    single = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=2))
    assert stop_token_ids(single, SimpleNamespace(eos_token_id=2)) == {2}
    assert stop_token_ids(SimpleNamespace(), SimpleNamespace(eos_token_id=None)) == set()
