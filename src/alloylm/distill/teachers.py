"""Teachers: an OpenAI-compatible chat endpoint, or a local model run in-process.

A teacher answers `complete(messages, max_tokens=..., temperature=...)` with a Completion or
raises TeacherError (retryable for 429, 5xx, timeouts, dropped connections and malformed
bodies). `call_with_retries` adds exponential backoff with jitter, honouring Retry-After.
The API key is read from the environment at call time and is never stored, logged or hashed:
`identity` (the cache key part) holds only the endpoint and the model name.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alloylm.errors import AlloyError, ConfigError


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


class TeacherError(Exception):
    """A failed teacher call. `reason` is a short code (counted in the stats: http_500, timeout,
    connection_error, malformed_response, ...); `detail` says what happened, for people."""

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.detail = detail

    def describe(self, teacher: str) -> str:
        """One sentence naming the teacher (its identity: endpoint and model)."""
        return f"teacher {teacher}: {self.detail or self.reason}"


class TeacherUnavailable(AlloyError):
    """Every teacher call of a run failed: the teacher is down, misnamed or misconfigured.
    Answers already cached are kept (the cache is written call by call)."""


def _error_body(error: urllib.error.HTTPError) -> str:
    """The server's own words from an error reply: OpenAI's {"error": {"message"}}, llama.cpp's
    and vLLM's variants of it, else the first characters of the body."""
    try:
        raw = error.read()[:2000]
    except Exception:
        return ""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:300]
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner.get("detail") or inner)[:300]
        if "detail" in data:
            return str(data["detail"])[:300]
        return str(inner)[:300]
    return str(data)[:300]


def _estimate_tokens(text: str) -> int:
    return max(1, round(len(text.split()) / 0.75))  # ~0.75 words per token (OpenAI's rule of thumb)


class OpenAITeacher:
    """Any endpoint speaking POST {base_url}/chat/completions (OpenAI, vLLM, llama.cpp, `alloy serve`)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        timeout_s: float = 120.0,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.extra_body = dict(extra_body or {})
        if api_key_env and not os.environ.get(api_key_env):
            raise ConfigError(
                f"environment variable {api_key_env} is not set",
                key="teacher.api_key_env",
                hint=f"export {api_key_env}=... (the key is read from the environment and never written)",
            )

    @property
    def identity(self) -> str:
        return f"openai:{self.base_url}|{self.model}"

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None = None,
    ) -> Completion:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            **self.extra_body,
        }
        if seed is not None:
            body["seed"] = seed
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ.get(self.api_key_env, '')}"
        url = f"{self.base_url}/chat/completions"
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            retry_after = error.headers.get("Retry-After") if error.headers else None
            retryable = error.code == 429 or error.code >= 500
            said = _error_body(error)
            detail = f"POST {url} answered HTTP {error.code}" + (f": {said}" if said else "")
            if error.code == 404:
                detail += (
                    " (is base_url the API root, e.g. http://127.0.0.1:8000/v1, and "
                    f"{self.model!r} a model the server has?)"
                )
            elif error.code in (401, 403):
                detail += (
                    f" (check the key in ${self.api_key_env})"
                    if self.api_key_env
                    else " (no key was sent: set teacher.api_key_env to the variable holding it)"
                )
            raise TeacherError(
                f"http_{error.code}",
                retryable=retryable,
                retry_after=float(retry_after)
                if retry_after and retry_after.replace(".", "").isdigit()
                else None,
                detail=detail,
            ) from None
        except TimeoutError:
            raise self._timeout(url) from None
        except (urllib.error.URLError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError):
                raise self._timeout(url) from None
            if isinstance(reason, ConnectionRefusedError):
                detail = f"connection refused at {url} (is the server running on that port?)"
            elif isinstance(reason, socket.gaierror):
                detail = f"cannot resolve the host of {url} ({reason})"
            else:
                detail = f"no connection to {url}: {reason}"
            raise TeacherError("connection_error", retryable=True, detail=detail) from None
        try:
            return parse_chat_response(raw, messages)
        except TeacherError as error:
            error.detail = (
                f"POST {url} answered with a body that is not an OpenAI chat.completion "
                f"({error.detail}): {raw[:200].decode('utf-8', 'replace')!r}"
            )
            raise

    def _timeout(self, url: str) -> TeacherError:
        return TeacherError(
            "timeout",
            retryable=True,
            detail=f"no answer from {url} within {self.timeout_s:g} s (raise teacher.timeout_s "
            "for a slow server)",
        )


def parse_chat_response(raw: bytes, messages: list[dict[str, str]]) -> Completion:
    """Completion from an OpenAI chat.completion body; TeacherError('malformed_response') otherwise."""
    try:
        data = json.loads(raw)
        text = data["choices"][0]["message"]["content"]
        if not isinstance(text, str):
            raise TypeError("content is not a string")
    except ValueError:
        raise TeacherError("malformed_response", retryable=True, detail="not JSON") from None
    except (KeyError, IndexError, TypeError):
        raise TeacherError(
            "malformed_response", retryable=True, detail="no choices[0].message.content string"
        ) from None
    usage = data.get("usage") or {}
    prompt = usage.get("prompt_tokens") or _estimate_tokens(
        " ".join(m["content"] for m in messages)
    )
    completion = usage.get("completion_tokens") or _estimate_tokens(text)
    return Completion(text, int(prompt), int(completion))


class LocalTeacher:
    """A model source (folder, embedded:, tiny:, .gguf, hub id) generating in this process."""

    def __init__(self, source: str, folder: Any) -> None:
        from alloylm.generation.batching import ModelGenerator

        self.source = source
        self._generator = ModelGenerator(folder)

    @property
    def identity(self) -> str:
        return f"local:{self.source}"

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None = None,
    ) -> Completion:
        result = self._generator.generate(
            messages, max_tokens=max_tokens, temperature=temperature, seed=seed
        )
        return Completion(result["text"], result["prompt_tokens"], result["completion_tokens"])


def backoff_delay(
    attempt: int, *, base_s: float, max_s: float, retry_after: float | None, rng: random.Random
) -> float:
    """Exponential backoff with full jitter (AWS architecture blog, 2015); Retry-After wins when given."""
    if retry_after is not None:
        return min(retry_after, max_s)
    return rng.uniform(0, min(max_s, base_s * 2**attempt))


_rng_lock = threading.Lock()


def call_with_retries(
    call: Callable[[], Completion],
    *,
    max_retries: int,
    base_s: float = 0.5,
    max_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> Completion:
    """Run `call`, retrying retryable TeacherErrors up to `max_retries` times."""
    rng = rng or random.Random()
    for attempt in range(max_retries + 1):
        try:
            return call()
        except TeacherError as error:
            if not error.retryable or attempt == max_retries:
                raise
            if on_retry:
                on_retry(error.reason)
            with _rng_lock:
                delay = backoff_delay(
                    attempt, base_s=base_s, max_s=max_s, retry_after=error.retry_after, rng=rng
                )
            sleep(delay)
    raise AssertionError("unreachable")
