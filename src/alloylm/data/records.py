"""Record kinds and the rules that turn a raw record (a dict from any file format) into one.

- TextDoc: raw text for continued pretraining.
- ChatExample: a conversation for SFT, from `messages`, `prompt`/`completion`,
  `question`/`answer`, `instruction`/`output`, or any record through a `template`.

Each conversion returns the record or a short reason why the raw record is unusable; loaders
turn reasons into counted, located problem reports (file:line) instead of crashing.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from alloylm.data.chat_template import Message, validate_messages

# Field pairs recognised as one user turn and one assistant turn, in order of preference.
CHAT_FIELD_PAIRS: tuple[tuple[str, str], ...] = (
    ("prompt", "completion"),
    ("question", "answer"),
    ("instruction", "output"),
)
PREFERENCE_FIELDS = ("chosen", "rejected")
BENCHMARK_FIELDS = ("choices", "options")


@dataclass(frozen=True)
class TextDoc:
    """One document of raw text. `key` is the value the holdout split hashes (see split.py)."""

    text: str
    file: str
    line: int | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ChatExample:
    """One conversation: [{role, content}, ...] with at least one assistant turn."""

    messages: tuple[Message, ...]
    file: str
    line: int | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


def record_to_text(record: Mapping[str, Any], text_field: str) -> str | TextProblem:
    """The document text of a raw record, or what is wrong with it."""
    if text_field not in record:
        return TextProblem(
            f"no {text_field!r} field (fields: {', '.join(sorted(record)) or 'none'})"
        )
    value = record[text_field]
    if not isinstance(value, str):
        return TextProblem(f"field {text_field!r} is {type(value).__name__}, expected text")
    if not value.strip():
        return TextProblem(f"field {text_field!r} is empty")
    return value


def record_to_messages(
    record: Mapping[str, Any], template: Mapping[str, str] | None = None
) -> list[Message] | TextProblem:
    """The conversation of a raw record, or what is wrong with it.

    With a `template` ({role: python format string}, roles in conversation order) every record
    becomes a chat, e.g. {user: "What is {term}?", assistant: "{definition}"}. Without one,
    `messages` is used as is, else the first field pair of CHAT_FIELD_PAIRS present; an optional
    `system` string field becomes a system turn.
    """
    if template:
        return _apply_template(record, template)
    if "messages" in record:
        messages = record["messages"]
        problem = validate_messages(messages)
        return TextProblem(problem) if problem else [dict(m) for m in messages]
    for user_field, assistant_field in CHAT_FIELD_PAIRS:
        if user_field in record and assistant_field in record:
            return _pair_to_messages(record, user_field, assistant_field)
    fields = ", ".join(sorted(record)) or "none"
    return TextProblem(
        f"not a chat record (fields: {fields}); expected 'messages', 'prompt'/'completion', "
        "'question'/'answer' or 'instruction'/'output', or give the source a `template`"
    )


def _pair_to_messages(
    record: Mapping[str, Any], user_field: str, assistant_field: str
) -> list[Message] | TextProblem:
    user, assistant = record[user_field], record[assistant_field]
    if isinstance(user, list) and user_field == "prompt":  # conversational prompt-completion
        messages = list(user) + (
            assistant
            if isinstance(assistant, list)
            else [{"role": "assistant", "content": assistant}]
        )
        problem = validate_messages(messages)
        return TextProblem(problem) if problem else [dict(m) for m in messages]
    for name, value in ((user_field, user), (assistant_field, assistant)):
        if not isinstance(value, str) or not value.strip():
            return TextProblem(f"field {name!r} must be non-empty text")
    messages: list[Message] = []
    system = record.get("system")
    if isinstance(system, str) and system.strip():
        messages.append({"role": "system", "content": system})
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages


def _apply_template(
    record: Mapping[str, Any], template: Mapping[str, str]
) -> list[Message] | TextProblem:
    messages: list[Message] = []
    for role, pattern in template.items():
        missing = [name for name in template_fields(pattern) if name not in record]
        if missing:
            fields = ", ".join(sorted(record)) or "none"
            return TextProblem(
                f"template for {role!r} needs field(s) {', '.join(missing)} (fields: {fields})"
            )
        content = pattern.format(**record)
        if not content.strip():
            return TextProblem(f"template for {role!r} gives empty text")
        messages.append({"role": role, "content": content})
    problem = validate_messages(messages)
    return TextProblem(problem) if problem else messages


def template_fields(pattern: str) -> list[str]:
    """Names used by a python format string: 'What is {term}?' -> ['term']."""
    names = []
    for _, name, _, _ in string.Formatter().parse(pattern):
        if name:
            names.append(name.split(".")[0].split("[")[0])
    return names


def guess_record_kind(record: Mapping[str, Any], text_field: str = "text") -> str:
    """'preference' | 'benchmark' | 'chat' | 'text' | 'unknown' for one raw record."""
    if all(name in record for name in PREFERENCE_FIELDS):
        return "preference"
    if any(name in record for name in BENCHMARK_FIELDS) and "answer" in record:
        return "benchmark"
    if "messages" in record or any(a in record and b in record for a, b in CHAT_FIELD_PAIRS):
        return "chat"
    if isinstance(record.get(text_field), str):
        return "text"
    return "unknown"


class TextProblem(str):
    """Why a raw record cannot be used (a str subclass, so it prints as the reason)."""
