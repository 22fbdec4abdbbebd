"""The one generation loop on tiny Llamas: greedy = transformers, seeds, stops, streaming, batching."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from alloylm.generation.batching import (
    Generation,
    ModelGenerator,
    QueueFull,
    _Sequence,
    generate_batch,
)
from alloylm.generation.sampling import SamplingParams
from alloylm.models.loading import load_causal_lm, load_tokenizer

QUESTION = [{"role": "user", "content": "What is bone made of?"}]


@pytest.fixture(scope="module")
def loaded(tiny_llama_other: Path) -> tuple[Any, Any]:
    # tiny:llama:1 answers with varied tokens (tiny:llama's greedy answer is one repeated token).
    return load_causal_lm(tiny_llama_other).eval(), load_tokenizer(tiny_llama_other)


@pytest.fixture(scope="module")
def generator(loaded: tuple[Any, Any]) -> Iterator[ModelGenerator]:
    model, tokenizer = loaded
    yield ModelGenerator(model=model, tokenizer=tokenizer, max_batch=4, max_queue=8)


def _hf_greedy(model: Any, ids: list[int], new: int, **extra: Any) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=new,
            do_sample=False,
            pad_token_id=2,
            **extra,
        )
    tokens = out[0, len(ids) :].tolist()
    return tokens[: tokens.index(2)] if 2 in tokens else tokens


def test_greedy_equals_transformers_generate(loaded, generator) -> None:
    model, _ = loaded
    prompts = [
        QUESTION,
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a tissue"}],
    ]
    for messages in prompts:
        ids = generator.encode_chat(messages)
        ours = generator.complete(messages, SamplingParams(max_new_tokens=24))
        assert ours.token_ids == _hf_greedy(model, ids, 24)
        # A random tiny model's greedy answer repeats one token; the repetition penalty makes
        # it vary, which compares the penalty and the KV-cached steps token by token.
        penalised = generator.complete(
            messages, SamplingParams(max_new_tokens=24, repetition_penalty=5.0)
        )
        assert penalised.token_ids == _hf_greedy(model, ids, 24, repetition_penalty=5.0)
        assert len(set(penalised.token_ids)) > 10


def test_batched_left_padded_greedy_equals_each_alone(loaded) -> None:
    model, tokenizer = loaded
    texts = ["Bone", "Collagen fibres in the extracellular matrix of dense tissue", "Leaf"]
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    results = generate_batch(model, tokenizer, prompts, SamplingParams(max_new_tokens=12))
    assert [r.token_ids for r in results] == [_hf_greedy(model, p, 12) for p in prompts]
    assert [r.text for r in results] == [
        tokenizer.decode(r.token_ids, skip_special_tokens=True) for r in results
    ]


def test_prompts_sharing_a_prefix_run_it_once_and_answer_as_each_alone(loaded, monkeypatch) -> None:
    from alloylm.generation.batching import MIN_SHARED_PREFIX, DecodeBatch

    model, tokenizer = loaded
    instruction = "Select the correct answer to this question about the tissues of the body: "
    texts = ["Bone?", "Which fibres make tendons strong under tension?", "Leaf cells?"]
    prompts = [tokenizer(instruction + t, add_special_tokens=False)["input_ids"] for t in texts]
    seen: list[int] = []
    original = DecodeBatch._prefill_shared_prefix

    def spy(self, all_ids, shared):
        seen.append(shared)
        return original(self, all_ids, shared)

    monkeypatch.setattr(DecodeBatch, "_prefill_shared_prefix", spy)
    results = generate_batch(
        model, tokenizer, prompts, SamplingParams(max_new_tokens=12, repetition_penalty=5.0)
    )
    assert seen and seen[0] >= MIN_SHARED_PREFIX
    expected = [_hf_greedy(model, p, 12, repetition_penalty=5.0) for p in prompts]
    assert [r.token_ids for r in results] == expected


def test_a_later_batch_reuses_the_kept_prefix_and_answers_as_each_alone(loaded) -> None:
    model, tokenizer = loaded
    instruction = "Select the correct answer to this question about the tissues of the body: "
    texts = ["Bone?", "Which fibres make tendons strong?", "Leaf cells?", "Enamel?"]
    prompts = [tokenizer(instruction + t, add_special_tokens=False)["input_ids"] for t in texts]
    params = SamplingParams(max_new_tokens=8, repetition_penalty=5.0)
    single_rows: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: (
            single_rows.append(kwargs["input_ids"].shape[1])
            if kwargs["input_ids"].shape[0] == 1
            else None
        ),
        with_kwargs=True,
    )
    try:  # two rows at a time, one batch after the other
        results = generate_batch(model, tokenizer, prompts, params, join_size=2, max_rows=2)
    finally:
        hook.remove()
    assert len(single_rows) == 1, "the shared prefix ran more than once"
    expected = [_hf_greedy(model, p, 8, repetition_penalty=5.0) for p in prompts]
    assert [r.token_ids for r in results] == expected


def test_prompts_joining_a_few_at_a_time_answer_as_each_alone(loaded) -> None:
    model, tokenizer = loaded
    texts = ["Bone", "Collagen fibres in dense tissue", "Leaf", "Cartilage", "Enamel", "Xylem"]
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    params = SamplingParams(max_new_tokens=10, repetition_penalty=5.0)
    done: list[int] = []
    results = generate_batch(
        model, tokenizer, prompts, params, join_size=2, max_rows=4, on_done=done.append
    )
    assert [r.token_ids for r in results] == [
        _hf_greedy(model, p, 10, repetition_penalty=5.0) for p in prompts
    ]
    assert sorted(done) == list(range(len(prompts)))


def test_seeded_sampling_holds_alone_and_inside_a_batch(generator) -> None:
    seeded = SamplingParams(max_new_tokens=16, temperature=1.0, seed=11)
    alone = generator.complete(QUESTION, seeded)
    assert generator.complete(QUESTION, seeded).token_ids == alone.token_ids
    prompt = generator.encode_chat(QUESTION)
    other = SamplingParams(max_new_tokens=16, temperature=1.0, seed=12)
    handles = generator.submit_many(
        prompt, [seeded, other, seeded, SamplingParams(max_new_tokens=3)]
    )
    together = [handle.wait() for handle in handles]
    assert together[0].token_ids == together[2].token_ids == alone.token_ids
    assert together[1].token_ids != alone.token_ids  # another seed draws other tokens
    unseeded = SamplingParams(max_new_tokens=16, temperature=1.0)
    assert (
        generator.complete(QUESTION, unseeded).token_ids
        != generator.complete(QUESTION, unseeded).token_ids
    )


def test_stop_strings_cut_and_streaming_deltas_concatenate(generator) -> None:
    params = SamplingParams(max_new_tokens=30, temperature=1.0, seed=5)
    full = generator.complete(QUESTION, params)
    word = full.text.split()[3]
    cut = full.text.index(word)
    stopped = generator.complete(QUESTION, SamplingParams(**{**params.__dict__, "stop": (word,)}))
    assert stopped.text == full.text[:cut] and stopped.finish_reason == "stop"
    assert word not in stopped.text
    deltas = list(generator.stream(QUESTION, params))
    assert len(deltas) > 5 and "".join(deltas) == full.text
    stop_deltas = list(
        generator.stream(QUESTION, stopped_params := stopped_params_of(params, word))
    )
    assert "".join(stop_deltas) == stopped.text
    assert stopped_params.stop == (word,)


def stopped_params_of(params: SamplingParams, word: str) -> SamplingParams:
    return SamplingParams(**{**params.__dict__, "stop": (word,)})


def _scripted(tokenizer: Any, pieces: list[int], params: SamplingParams) -> tuple[list, Generation]:
    events: list = []
    sequence = _Sequence(
        [1],
        params,
        events.append,
        tokenizer=tokenizer,
        stop_ids=frozenset({2}),
        context_length=None,
    )
    for token in pieces:
        if not sequence.finished:
            sequence.advance(token, None)
    if not sequence.finished:
        sequence._finish("length")
    done = events.pop()
    return [e[1] for e in events], done[1]


def test_deltas_never_split_a_character_nor_show_a_stop_string(loaded) -> None:
    _, tokenizer = loaded
    bone = tokenizer("a 🦴 b", add_special_tokens=False)["input_ids"]  # the emoji is 3 byte tokens
    deltas, done = _scripted(tokenizer, bone, SamplingParams(max_new_tokens=50))
    assert "".join(deltas) == done.text == "a 🦴 b"
    assert all("\ufffd" not in delta for delta in deltas)
    atp = tokenizer("make ATP now", add_special_tokens=False)["input_ids"]  # "AT", "P"
    deltas, done = _scripted(tokenizer, atp, SamplingParams(max_new_tokens=50, stop=("ATP",)))
    assert done.text == "make " and done.finish_reason == "stop"
    assert "".join(deltas) == "make " and not any("A" in d for d in deltas)  # "AT" was held back
    # a partial stop string that does not complete is released
    at = tokenizer("make AT now", add_special_tokens=False)["input_ids"]
    deltas, done = _scripted(tokenizer, at, SamplingParams(max_new_tokens=50, stop=("ATP",)))
    assert "".join(deltas) == done.text == "make AT now"


def test_json_object_mode_stops_when_the_object_closes(loaded, generator) -> None:
    _, tokenizer = loaded
    tokens = tokenizer('{"a": {"b": "}"}} and more', add_special_tokens=False)["input_ids"]
    _, done = _scripted(tokenizer, tokens, SamplingParams(max_new_tokens=50, json_object=True))
    assert done.text == '{"a": {"b": "}"}}' and done.finish_reason == "stop"
    # With the real model, the first visible character is forced to be '{'.
    for seed in range(3):
        params = SamplingParams(max_new_tokens=6, temperature=1.0, seed=seed, json_object=True)
        assert generator.complete(QUESTION, params).text.lstrip().startswith("{")


def test_a_short_request_finishes_before_a_long_one_in_the_same_batch(generator) -> None:
    prompt = generator.encode_chat(QUESTION)
    long = generator.submit(prompt, SamplingParams(max_new_tokens=600))
    next(event for event in long.events() if event[0] == "delta")  # the long one is running
    short = generator.submit(prompt, SamplingParams(max_new_tokens=1))
    assert short.wait().completion_tokens == 1
    assert long.result is None  # still generating: no head-of-line blocking
    assert long.wait().completion_tokens == 600


def test_a_full_queue_refuses_and_a_cancelled_stream_leaves_the_batch(loaded) -> None:
    model, tokenizer = loaded
    small = ModelGenerator(model=model, tokenizer=tokenizer, max_batch=1, max_queue=1)
    prompt = small.encode_chat(QUESTION)
    first = small.submit(prompt, SamplingParams(max_new_tokens=1500))
    next(event for event in first.events() if event[0] == "delta")
    waiting = small.submit(prompt, SamplingParams(max_new_tokens=2))
    with pytest.raises(QueueFull):
        small.submit(prompt, SamplingParams(max_new_tokens=2))
    first.cancel()
    assert first.wait().finish_reason == "cancelled"
    assert waiting.wait().completion_tokens == 2  # the slot was freed


def test_the_local_teacher_generates_through_the_one_loop(tiny_llama: Path) -> None:
    from alloylm.distill.teachers import LocalTeacher

    teacher = LocalTeacher("tiny:llama", tiny_llama)
    assert type(teacher._generator).__module__ == "alloylm.generation.batching"
    completion = teacher.complete(QUESTION, max_tokens=5, temperature=1.0, seed=1)
    again = teacher.complete(QUESTION, max_tokens=5, temperature=1.0, seed=1)
    assert completion == again and completion.completion_tokens == 5


def test_threads_see_their_own_answers(generator) -> None:
    answers: dict[int, str] = {}

    def ask(seed: int) -> None:
        params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=seed)
        answers[seed] = generator.complete(QUESTION, params).text

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for seed in range(4):
        params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=seed)
        assert generator.complete(QUESTION, params).text == answers[seed]


def test_the_study_preset_samples_reproducibly(generator) -> None:
    from alloylm.generation.sampling import preset

    params = preset("study", max_new_tokens=10, seed=3)
    first = generator.complete(QUESTION, params)
    assert first.completion_tokens == 10 and generator.complete(QUESTION, params) == first


def test_streamed_logprobs_go_with_their_text(loaded) -> None:
    _, tokenizer = loaded
    from alloylm.generation.batching import TokenLogprob

    events: list = []
    params = SamplingParams(max_new_tokens=50, stop=(" ATP now",), logprobs=True)
    sequence = _Sequence(
        [1],
        params,
        events.append,
        tokenizer=tokenizer,
        stop_ids=frozenset({2}),
        context_length=None,
    )
    for token in tokenizer("make ATP now", add_special_tokens=False)["input_ids"]:
        if not sequence.finished:
            sequence.advance(token, TokenLogprob(tokenizer.decode([token]), -1.0, []))
    deltas = [event for event in events if event[0] == "delta"]
    assert all(text for _, text, _ in deltas)  # no logprobs without text
    streamed = [entry.token for _, _, entries in deltas for entry in entries]
    assert "".join(streamed) == events[-1][1].text == "make"
    assert [entry.token for entry in events[-1][1].logprobs] == streamed


def test_a_request_joining_a_running_batch_gets_the_answer_it_gets_alone(generator) -> None:
    varied = SamplingParams(max_new_tokens=40, repetition_penalty=5.0)
    other = [{"role": "user", "content": "Leaves and collagen: how are they alike?"}]
    alone_long = generator.complete(QUESTION, varied).token_ids
    alone_short = generator.complete(other, replace(varied, max_new_tokens=12)).token_ids
    long = generator.submit(generator.encode_chat(QUESTION), varied)
    seen = 0
    for event in long.events():  # join after a few steps, with a shorter prompt
        seen += event[0] == "delta"
        if seen == 5:
            break
    short = generator.submit(generator.encode_chat(other), replace(varied, max_new_tokens=12))
    assert short.wait().token_ids == alone_short
    assert long.wait().token_ids == alone_long
    assert generator._batch._plain_cache() or not generator._batch.rows  # the merge path ran


def test_a_closed_generator_refuses_new_work(loaded) -> None:
    model, tokenizer = loaded
    closing = ModelGenerator(model=model, tokenizer=tokenizer)
    assert closing.complete(QUESTION, SamplingParams(max_new_tokens=2)).completion_tokens == 2
    closing.close()
    with pytest.raises(RuntimeError, match="closed"):
        closing.complete(QUESTION, SamplingParams(max_new_tokens=2))
