"""`alloy serve` driven by the official `openai` client: the conformance the issue asks for."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from alloylm.chat.serve import start_server
from alloylm.errors import ConfigError
from alloylm.generation.batching import ModelGenerator

KEY = "test-key-7f3a"
QUESTION = [{"role": "user", "content": "What is bone made of?"}]


@pytest.fixture(scope="module")
def generators(tiny_llama: Path, tiny_llama_other: Path) -> Iterator[dict[str, ModelGenerator]]:
    loaded = {
        "tiny": ModelGenerator(tiny_llama, max_batch=4, max_queue=8),
        "tiny-1": ModelGenerator(tiny_llama_other, max_batch=4, max_queue=8),
    }
    yield loaded
    for generator in loaded.values():
        generator.close()


@pytest.fixture(scope="module")
def base_url(generators: dict[str, ModelGenerator]) -> Iterator[str]:
    server, _ = start_server({}, generators=generators, api_key=KEY, default_max_tokens=16)
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=60)


def _ask(client: openai.OpenAI, **overrides: Any) -> Any:
    return client.chat.completions.create(
        **{"model": "tiny-1", "messages": QUESTION, "max_tokens": 8, **overrides}
    )


def test_models_are_served_by_name_and_an_unknown_one_is_404(client: openai.OpenAI) -> None:
    assert sorted(model.id for model in client.models.list()) == ["tiny", "tiny-1"]
    assert client.models.retrieve("tiny").id == "tiny"
    reply = _ask(client, model="tiny")
    assert reply.model == "tiny" and isinstance(reply.choices[0].message.content, str)
    assert reply.usage.completion_tokens == 8 and reply.usage.prompt_tokens > 5
    for name in ("nope", "/tmp", str(Path.home())):  # a request can never name a path to load
        with pytest.raises(openai.NotFoundError) as error:
            _ask(client, model=name)
        assert error.value.body["code"] == "model_not_found"


def test_api_key_is_required_and_never_echoed(base_url: str) -> None:
    for key in ("wrong-key", KEY + "x"):
        bad = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as error:
            bad.models.list()
        assert error.value.status_code == 401 and error.value.body["code"] == "invalid_api_key"
        text = error.value.response.text
        assert key not in text and KEY not in text
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=2)


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": "abc"}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"temperature": 3}, "temperature"),
        ({"n": 0}, "n"),
        ({"top_logprobs": 2}, "top_logprobs"),  # needs logprobs: true
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": 1.0}, "frequency_penalty"),
        ({"logit_bias": {"5": 10}}, "logit_bias"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format",
        ),
        ({"stream_options": {"include_usage": True}}, "stream_options"),  # needs stream
        ({"extra_body": {"best_of": 2}}, "best_of"),
    ],
)
def test_client_errors_are_400_in_openai_shape(
    client: openai.OpenAI, overrides: dict, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        _ask(client, **overrides)
    body = error.value.body
    assert error.value.status_code == 400 and body["param"] == param
    assert body["type"] == "invalid_request_error" and body["message"]


def test_neutral_penalties_and_metadata_are_accepted(client: openai.OpenAI) -> None:
    reply = _ask(client, presence_penalty=0, frequency_penalty=0.0, user="someone")
    assert reply.choices[0].finish_reason == "length"


def test_stop_cuts_the_answer(client: openai.OpenAI) -> None:
    full = _ask(client, temperature=1.0, seed=4, max_tokens=20).choices[0].message.content
    word = full.split()[2]
    cut = _ask(client, temperature=1.0, seed=4, max_tokens=20, stop=[word]).choices[0]
    assert cut.message.content == full[: full.index(word)] and cut.finish_reason == "stop"
    assert word not in cut.message.content


def test_n_seeds_and_logprobs(client: openai.OpenAI) -> None:
    reply = _ask(client, temperature=1.0, seed=9, n=3, logprobs=True, top_logprobs=2)
    texts = [choice.message.content for choice in reply.choices]
    assert [choice.index for choice in reply.choices] == [0, 1, 2]
    assert len(set(texts)) == 3  # choice i draws with seed + i
    again = _ask(client, temperature=1.0, seed=9, n=3)
    assert [choice.message.content for choice in again.choices] == texts
    assert _ask(client, temperature=1.0, seed=10).choices[0].message.content == texts[1]
    assert reply.usage.completion_tokens == 3 * 8
    entries = reply.choices[0].logprobs.content
    assert len(entries) == 8 and "".join(entry.token for entry in entries) == texts[0]
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        assert entry.bytes == list(entry.token.encode())


def test_json_object_mode_starts_an_object(client: openai.OpenAI) -> None:
    reply = _ask(
        client, temperature=1.0, seed=1, max_tokens=10, response_format={"type": "json_object"}
    )
    choice = reply.choices[0]
    # A random model rarely closes its object: finish_reason says it was cut (as OpenAI does).
    assert choice.message.content.lstrip().startswith("{") and choice.finish_reason == "length"


def test_streaming_sends_token_deltas_and_usage(client: openai.OpenAI) -> None:
    expected = _ask(client, temperature=1.0, seed=2, max_tokens=12).choices[0].message.content
    stream = _ask(
        client,
        temperature=1.0,
        seed=2,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) > 3 and "".join(deltas) == expected
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])


def test_seeds_hold_inside_a_batch(client: openai.OpenAI) -> None:
    alone = _ask(client, temperature=1.0, seed=21, max_tokens=12).choices[0].message.content
    answers: dict[int, str] = {}

    def ask(slot: int, seed: int) -> None:
        reply = _ask(client, temperature=1.0, seed=seed, max_tokens=12)
        answers[slot] = reply.choices[0].message.content

    threads = [
        threading.Thread(target=ask, args=(slot, seed))
        for slot, seed in enumerate([21, 22, 21, 21])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers[0] == answers[2] == answers[3] == alone and answers[1] != alone


def test_a_short_request_does_not_wait_behind_a_long_one(client: openai.OpenAI) -> None:
    started, finished = threading.Event(), threading.Event()

    def long_stream() -> None:
        for chunk in _ask(client, model="tiny", max_tokens=600, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                started.set()
        finished.set()

    thread = threading.Thread(target=long_stream)
    thread.start()
    assert started.wait(60)
    began = time.monotonic()
    short = _ask(client, model="tiny", max_tokens=1)
    took = time.monotonic() - began
    assert short.usage.completion_tokens == 1
    assert not finished.is_set(), f"the 1-token request waited for the long one ({took:.2f} s)"
    thread.join(120)
    assert finished.is_set()


def test_context_length_is_checked(client: openai.OpenAI) -> None:
    long_text = "bone " * 2100  # tiny:llama has 2048 positions
    with pytest.raises(openai.BadRequestError) as error:
        _ask(client, messages=[{"role": "user", "content": long_text}])
    assert error.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as error:
        _ask(client, max_tokens=2040)
    assert error.value.body["code"] == "context_length_exceeded"


def test_a_full_queue_is_503_with_retry_after(tiny_llama: Path) -> None:
    one = ModelGenerator(tiny_llama, max_batch=1, max_queue=0)
    server, _ = start_server({}, generators={"tiny": one})
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="x", max_retries=0
    )
    try:
        stream = _ask(client, model="tiny", max_tokens=1500, stream=True)
        next(c for c in stream if c.choices and c.choices[0].delta.content)
        with pytest.raises(openai.APIStatusError) as error:
            _ask(client, model="tiny", max_tokens=1)
        assert error.value.status_code == 503 and error.value.response.headers["retry-after"] == "1"
        assert error.value.body["code"] == "overloaded"
        stream.close()  # the client goes away: its sequence leaves the batch
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                assert _ask(client, model="tiny", max_tokens=1).usage.completion_tokens == 1
                break
            except openai.APIStatusError:
                time.sleep(0.1)
        else:
            pytest.fail("the slot of a closed stream was never freed")
    finally:
        server.shutdown()
        server.server_close()
        one.close()


def test_a_non_loopback_bind_needs_a_key(generators: dict[str, ModelGenerator]) -> None:
    with pytest.raises(ConfigError, match="without an API key"):
        start_server({}, host="0.0.0.0", generators=generators)


def test_the_distill_teacher_works_against_it(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alloylm.distill.teachers import OpenAITeacher

    monkeypatch.setenv("ALLOY_TEST_TEACHER_KEY", KEY)
    teacher = OpenAITeacher(base_url, "tiny-1", api_key_env="ALLOY_TEST_TEACHER_KEY")
    completion = teacher.complete(QUESTION, max_tokens=6, temperature=1.0, seed=3)
    assert completion.completion_tokens == 6 and completion.text
    assert teacher.complete(QUESTION, max_tokens=6, temperature=1.0, seed=3) == completion
