"""Sampling parameters and presets, the stop rule, the token choice and the JSON object scanner:
the pure parts of generation (see `alloylm.generation`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

Message = dict[str, str]


@dataclass(frozen=True)
class SamplingParams:
    """What a caller may ask of one generation. temperature 0 means greedy (argmax)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    repetition_penalty: float = 1.0  # 1: off
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0  # alternatives reported per token when `logprobs` is on
    logprobs: bool = False
    json_object: bool = False  # reply is one JSON object; generation stops when it closes

    def __post_init__(self) -> None:
        problems = {
            "max_new_tokens": self.max_new_tokens < 1,
            "temperature": self.temperature < 0,
            "top_p": not 0 < self.top_p <= 1,
            "top_k": self.top_k < 0,
            "repetition_penalty": self.repetition_penalty <= 0,
            "top_logprobs": self.top_logprobs < 0,
        }
        for name, bad in problems.items():
            if bad:
                raise ValueError(f"{name} = {getattr(self, name)!r} is out of range")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


# The study's conversation settings (top_k 512, top_p 0.9, repetition_penalty 1.1, 1024 new
# tokens). The study gives no temperature; 1.0 is transformers' default when sampling.
PRESETS: dict[str, SamplingParams] = {
    "greedy": SamplingParams(temperature=0.0),
    "study": SamplingParams(
        temperature=1.0, top_k=512, top_p=0.9, repetition_penalty=1.1, max_new_tokens=1024
    ),
}


def preset(name: str, **overrides: Any) -> SamplingParams:
    """A named preset with some fields replaced, e.g. preset('study', seed=1)."""
    from alloylm.errors import ConfigError, did_you_mean

    if name not in PRESETS:
        raise ConfigError(
            f"unknown sampling preset {name!r}{did_you_mean(name, PRESETS)}",
            key="preset",
            hint=f"known presets: {', '.join(PRESETS)}",
        )
    return replace(PRESETS[name], **overrides)


# ---------------------------------------------------------------- the stop rule
def stop_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """EOS ids of the model's generation_config (an int or a list) and of the tokenizer."""
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    for value in eos if isinstance(eos, (list, tuple)) else [eos]:
        if value is not None:
            ids.add(int(value))
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> int | None:
    """Index where the earliest stop string begins in text[start:] (absolute), or None."""
    found = [i for i in (text.find(s, start) for s in stops if s) if i >= 0]
    return min(found) if found else None


def partial_stop_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string.

    That tail is held back from a stream: the next tokens may complete the stop string.
    """
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class JsonObjectScanner:
    """Follows text character by character and reports where the first top-level JSON object
    closes (strings and escapes are respected, so braces inside strings do not count)."""

    def __init__(self) -> None:
        self.depth = 0
        self.started = False
        self.in_string = False
        self.escaped = False
        self.position = 0  # characters consumed
        self.end: int | None = None  # index just past the closing brace
        self.bad_start = False  # the first non-space character is not '{'

    def feed(self, text: str) -> None:
        for char in text:
            if self.end is not None or self.bad_start:
                return
            self.position += 1
            if not self.started:
                if char.isspace():
                    continue
                if char != "{":
                    self.bad_start = True
                    return
                self.started, self.depth = True, 1
                continue
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.end = self.position


# ---------------------------------------------------------------- sampling (pure, per row)
def apply_repetition_penalty(logits: Any, previous: Sequence[int], penalty: float) -> Any:
    """CTRL's penalty (Keskar et al. 2019, arXiv:1909.05858, eq. 3, as transformers applies it):
    a seen token's positive logit is divided by `penalty`, a negative one multiplied."""
    import torch

    if penalty == 1.0 or not previous:
        return logits
    index = torch.tensor(sorted(set(previous)), dtype=torch.long, device=logits.device)
    seen = logits[index]
    logits = logits.clone()
    logits[index] = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits


def filter_top_k(logits: Any, k: int) -> Any:
    """Keep the k largest logits (Fan et al. 2018, arXiv:1805.04833); the rest become -inf."""
    import torch

    if k <= 0 or k >= logits.shape[-1]:
        return logits
    threshold = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < threshold, float("-inf"))


def filter_top_p(logits: Any, p: float) -> Any:
    """Nucleus filter (Holtzman et al. 2020, arXiv:1904.09751): keep the smallest set of most
    likely tokens whose probability reaches p (the most likely token is always kept)."""
    import torch

    if p >= 1.0:
        return logits
    ordered, order = torch.sort(logits, descending=True)
    cumulative = ordered.softmax(-1).cumsum(-1)
    drop = cumulative - ordered.softmax(-1) >= p  # mass before this token already reaches p
    drop[0] = False
    return logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))


def choose_token(
    logits: Any,
    params: SamplingParams,
    previous: Sequence[int],
    generator: Any,
    banned: Any = None,
) -> int:
    """The next token for one row: penalty, then argmax or temperature/top-k/top-p sampling."""
    import torch

    logits = apply_repetition_penalty(logits.float(), previous, params.repetition_penalty)
    if banned is not None:
        logits = logits.masked_fill(banned, float("-inf"))
    if params.greedy:
        return int(torch.argmax(logits))
    logits = filter_top_p(filter_top_k(logits / params.temperature, params.top_k), params.top_p)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def is_json_object(text: str) -> bool:
    """True when `text` parses as one JSON object (what json_object mode promises)."""
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
