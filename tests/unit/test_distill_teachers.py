"""Retry/backoff policy, OpenAI response parsing, and the SQLite call cache."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from alloylm.distill.cache import CallCache, call_key
from alloylm.distill.teachers import (
    Completion,
    OpenAITeacher,
    TeacherError,
    backoff_delay,
    call_with_retries,
    parse_chat_response,
)
from alloylm.errors import ConfigError


def test_backoff_is_bounded_exponential_and_honours_retry_after() -> None:
    rng = random.Random(0)
    for attempt in range(6):
        delay = backoff_delay(attempt, base_s=1.0, max_s=10.0, retry_after=None, rng=rng)
        assert 0 <= delay <= min(10.0, 2**attempt)
    assert backoff_delay(3, base_s=1.0, max_s=10.0, retry_after=2.5, rng=rng) == 2.5
    assert backoff_delay(3, base_s=1.0, max_s=10.0, retry_after=99, rng=rng) == 10.0


def test_call_with_retries_retries_retryable_then_gives_up() -> None:
    outcomes = [
        TeacherError("http_429", retryable=True),
        TeacherError("http_500", retryable=True),
        Completion("ok", 1, 1),
    ]
    sleeps: list[float] = []
    reasons: list[str] = []

    def call() -> Completion:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert (
        call_with_retries(call, max_retries=3, sleep=sleeps.append, on_retry=reasons.append).text
        == "ok"
    )
    assert reasons == ["http_429", "http_500"] and len(sleeps) == 2

    def always_busy() -> Completion:
        raise TeacherError("http_503", retryable=True)

    with pytest.raises(TeacherError, match="http_503"):
        call_with_retries(always_busy, max_retries=2, sleep=sleeps.append)

    calls = []

    def unauthorized() -> Completion:
        calls.append(1)
        raise TeacherError("http_401", retryable=False)

    with pytest.raises(TeacherError):
        call_with_retries(unauthorized, max_retries=5, sleep=sleeps.append)
    assert len(calls) == 1


def test_parse_chat_response() -> None:
    body = b'{"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}'
    assert parse_chat_response(body, [{"role": "user", "content": "x"}]) == Completion("hi", 7, 2)
    no_usage = parse_chat_response(
        b'{"choices": [{"message": {"content": "one two three"}}]}',
        [{"role": "user", "content": "a b c"}],
    )
    assert no_usage.prompt_tokens == 4 and no_usage.completion_tokens == 4
    for bad in (
        b"<html>oops",
        b'{"choices": []}',
        b'{"choices": [{"message": {"content": null}}]}',
    ):
        with pytest.raises(TeacherError, match="malformed_response"):
            parse_chat_response(bad, [])


def test_missing_api_key_env_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALLOY_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="ALLOY_TEST_KEY"):
        OpenAITeacher("http://127.0.0.1:9/v1", "m", api_key_env="ALLOY_TEST_KEY")
    monkeypatch.setenv("ALLOY_TEST_KEY", "sk-secret")
    teacher = OpenAITeacher("http://127.0.0.1:9/v1", "m", api_key_env="ALLOY_TEST_KEY")
    assert "sk-secret" not in teacher.identity


def test_cache_persists_across_connections(tmp_path: Path) -> None:
    key = call_key("openai:x|m", "qa:v1:abc", "h1")
    assert (
        key
        != call_key("openai:x|m", "qa:v2:abc", "h1")
        != call_key("openai:x|m", "qa:v1:abc", "h2")
    )
    cache = CallCache(tmp_path / "c.sqlite")
    assert cache.get(key) is None
    cache.put(
        key,
        teacher="openai:x|m",
        template="qa:v1:abc",
        input_hash="h1",
        response="Q: a\nA: b",
        prompt_tokens=5,
        completion_tokens=3,
    )
    run = cache.start_run()
    cache.finish_run(run, "complete", {"calls_made": 1})
    cache.close()
    again = CallCache(tmp_path / "c.sqlite")
    assert again.get(key) == ("Q: a\nA: b", 5, 3)
    assert again.totals() == {"cached_calls": 1, "prompt_tokens": 5, "completion_tokens": 3}
    assert again.runs()[0]["status"] == "complete" and again.runs()[0]["stats"] == {"calls_made": 1}
    again.close()
