"""Preference pairs: records, loaders for the layouts we meet, and the text the trainers see.

Layouts read as they are (JSONL, optionally gzip-compressed; CSV and Parquet through data.sources):

- the study's layout: ``{"prompt": ..., "chosen": ..., "rejected": ...}`` where each field is a
  plain string or a list of ``{role, content}`` messages. A chosen/rejected list that repeats the
  prompt messages ("implicit prompt", as in many hub datasets) has that prefix removed; without a
  ``prompt`` field the common message prefix of chosen and rejected is the prompt.
- Anthropic HH-RLHF: ``{"chosen": "\\n\\nHuman: ... \\n\\nAssistant: ...", "rejected": ...}`` full
  transcripts; the prompt is the common prefix up to its last ``\\n\\nAssistant:``.

Bad records (missing field, empty chosen or rejected, chosen equal to rejected, invalid JSON,
prompt over ``max_prompt_length`` when dropping) never stop a load: each is reported with file and
line and counted in a `PreferenceReport`, which the stages put in their summary.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from alloylm.config.strict import StrictModel
from alloylm.data.chat_template import (
    Message,
    format_chat,
    format_prompt,
    validate_messages,
    with_bos,
    without_auto_bos,
)
from alloylm.errors import DataError

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
LongPromptPolicy = Literal["drop", "truncate_left"]
MAX_LOGGED_PER_REASON = 5  # the rest are counted, not printed


@dataclass(frozen=True)
class PreferencePair:
    """One preference: the conversation so far, and a better and a worse assistant reply."""

    prompt: tuple[Message, ...]
    chosen: tuple[Message, ...]
    rejected: tuple[Message, ...]
    origin: str = ""  # "file:line", for messages about this record


@dataclass(frozen=True)
class RecordIssue:
    file: str
    line: int
    reason: str

    def render(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class PreferenceReport:
    """What a load kept and skipped, with the place of every skipped record."""

    read: int = 0
    kept: int = 0
    truncated: int = 0
    issues: list[RecordIssue] = field(default_factory=list)

    def skip(self, file: str, line: int, reason: str) -> None:
        self.issues.append(RecordIssue(file, line, reason))

    def counts(self) -> dict[str, int]:
        return dict(Counter(_reason_key(i.reason) for i in self.issues))

    def summary(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "kept": self.kept,
            "truncated_prompts": self.truncated,
            "skipped": self.counts(),
        }

    def merge(self, other: PreferenceReport) -> None:
        self.read += other.read
        self.kept += other.kept
        self.truncated += other.truncated
        self.issues.extend(other.issues)

    def log_lines(self) -> list[str]:
        """A few lines per kind of problem, then how many more of that kind there were."""
        lines: list[str] = []
        shown: Counter[str] = Counter()
        for issue in self.issues:
            key = _reason_key(issue.reason)
            shown[key] += 1
            if shown[key] <= MAX_LOGGED_PER_REASON:
                lines.append(f"skipped {issue.render()}")
        for key, count in self.counts().items():
            if count > MAX_LOGGED_PER_REASON:
                lines.append(
                    f"... and {count - MAX_LOGGED_PER_REASON} more records skipped for: {key}"
                )
        return lines


def _reason_key(reason: str) -> str:
    return reason.split(":", 1)[0]


# -- reading files --------------------------------------------------------------------------------


class PreferenceSource(StrictModel):
    """One entry of a preference stage's `data:` list."""

    path: str = Field(
        description="a file (.jsonl, .jsonl.gz, .csv, .parquet), a folder, or a data stage's output"
    )
    weight: float = Field(
        1.0, gt=0.0, description="times each pair is used: 2.0 twice, 0.5 a seeded half"
    )
    limit: int | None = Field(None, ge=1, description="use only the first N usable pairs")
    fraction: Literal["sample", "first"] = Field(
        "sample",
        description="the records a fractional weight takes: a seeded sample, or the first ones "
        "in file order (the alignment-handbook's dataset_mixer, as the study ran it)",
    )
    strict: bool = Field(
        False, description="an unusable record is an error (default: skipped, counted, located)"
    )


def preference_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files a source path stands for: a data stage's artifact folder gives its preference
    file (alloy.json `outputs`), any other folder its data files (see data.sources)."""
    from alloylm.data.sources import source_files

    path = Path(path)
    manifest = path / "alloy.json"
    if path.is_dir() and manifest.exists():
        outputs = json.loads(manifest.read_text()).get("outputs") or {}
        if "preference" in outputs:
            return [path / outputs["preference"]]
        raise DataError(
            f"stage output {path} has no preference data (it holds: {', '.join(outputs) or 'nothing'})",
            file=str(path),
            hint="point at a stage that writes preference pairs (distill with a preference builder)",
        )
    return source_files(path)


def iter_json_records(
    path: str | os.PathLike[str], report: PreferenceReport
) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed record) of a JSONL(.gz) file; bad lines go to `report`."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"preference file {path} does not exist", file=str(path), hint="check the data path"
        )
    from alloylm.data.jsonl import iter_jsonl

    def bad_line(number: int, problem: str) -> None:
        report.read += 1
        report.skip(str(path), number, problem)

    yield from iter_jsonl(path, on_error=bad_line)


def _iter_file_records(path: Path, report: PreferenceReport) -> Iterator[tuple[int, Any]]:
    from alloylm.data.sources import file_format, iter_raw_records

    if file_format(path) == "jsonl":
        yield from iter_json_records(path, report)
    else:  # csv / parquet: message lists, if any, arrive as JSON text
        for _, line, record in iter_raw_records(path):
            yield line or 0, {k: _maybe_json(v) for k, v in record.items()}


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def read_preference_file(
    path: str | os.PathLike[str], limit: int | None = None
) -> tuple[list[PreferencePair], PreferenceReport]:
    """Read the usable pairs of one file or folder (at most `limit`); skipped records are in the report."""
    report = PreferenceReport()
    pairs: list[PreferencePair] = []
    for file in preference_files(path):
        for line, record in _iter_file_records(file, report):
            if limit is not None and len(pairs) >= limit:
                break
            report.read += 1
            try:
                pairs.append(parse_record(record, origin=f"{file}:{line}"))
            except ValueError as error:
                report.skip(str(file), line, str(error))
    report.kept = len(pairs)
    return pairs, report


def read_preference_files(
    paths: Sequence[str | os.PathLike[str]],
) -> tuple[list[PreferencePair], PreferenceReport]:
    total = PreferenceReport()
    pairs: list[PreferencePair] = []
    for path in paths:
        file_pairs, report = read_preference_file(path)
        pairs.extend(file_pairs)
        total.merge(report)
    return pairs, total


def load_preference_sources(
    sources: Sequence[PreferenceSource], seed: int
) -> tuple[list[PreferencePair], PreferenceReport, list[dict[str, Any]]]:
    """Pairs of all sources mixed by weight (seeded, see data.mixing), the merged report, and
    per-source details for the stage summary."""
    from alloylm.data.mixing import mix

    loaded = [read_preference_file(source.path, source.limit) for source in sources]
    for source, (_, report) in zip(sources, loaded, strict=True):
        if source.strict and report.issues:
            raise DataError(
                f"{len(report.issues)} unusable records (strict: true); first: "
                f"{report.issues[0].render()}",
                file=source.path,
                key="strict",
                hint="fix those records, or drop `strict: true` to skip them (counted in "
                "alloy.json)",
            )
    for source, (pairs, _) in zip(sources, loaded, strict=True):
        if not pairs:
            raise DataError(
                f"no usable preference pairs in {source.path}",
                file=source.path,
                hint="each record needs prompt, chosen and rejected (see docs/preference.md)",
            )
    mixed, counts = mix(
        [pairs for pairs, _ in loaded],
        [s.weight for s in sources],
        seed,
        first=[s.fraction == "first" for s in sources],
    )
    total = PreferenceReport()
    details = []
    for source, (_, report), count in zip(sources, loaded, counts, strict=True):
        total.merge(report)
        details.append(
            {"path": source.path, "weight": source.weight, **report.summary(), "mixed_pairs": count}
        )
    return mixed, total, details


# -- parsing one record ---------------------------------------------------------------------------


def parse_record(record: Any, origin: str = "") -> PreferencePair:
    """One JSON record -> PreferencePair; ValueError says what is wrong (reason: detail)."""
    if not isinstance(record, dict):
        raise ValueError(
            f"not an object: expected {{prompt, chosen, rejected}}, got {type(record).__name__}"
        )
    for name in ("chosen", "rejected"):
        if name not in record or record[name] is None:
            raise ValueError(f"missing field: {name!r} (expected prompt, chosen, rejected)")
    chosen, rejected = record["chosen"], record["rejected"]
    if (
        "prompt" not in record
        and isinstance(chosen, str)
        and chosen.lstrip("\n").startswith("Human:")
    ):
        pair = split_hh_transcripts(chosen, rejected, origin)
    else:
        pair = _parse_study_layout(record.get("prompt"), chosen, rejected, origin)
    _check_pair(pair)
    return pair


def _check_pair(pair: PreferencePair) -> None:
    for name, messages in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        if not messages or not any(m["content"].strip() for m in messages):
            raise ValueError(f"empty {name}: the {name} reply has no text")
    if pair.chosen == pair.rejected:
        raise ValueError("chosen equals rejected: the pair teaches nothing")
    problem = validate_messages([*pair.prompt, *pair.chosen])
    if problem:
        raise ValueError(f"bad messages: {problem}")
    if pair.prompt and pair.prompt[-1]["role"] == "assistant":
        raise ValueError(
            "bad messages: the prompt ends with an assistant turn; the reply must follow a user turn"
        )


def _as_messages(value: Any, default_role: str, name: str) -> list[Message]:
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if isinstance(value, dict) and "content" in value:
        value = [value]
    if not isinstance(value, list):
        raise ValueError(
            f"bad messages: {name} must be a string or a list of {{role, content}} messages"
        )
    messages = []
    for position, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"bad messages: {name} message {position} needs 'role' and 'content'")
        messages.append({"role": str(message["role"]), "content": message["content"]})
    return messages


def _common_prefix(a: list[Message], b: list[Message]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def _parse_study_layout(prompt: Any, chosen: Any, rejected: Any, origin: str) -> PreferencePair:
    chosen_messages = _as_messages(chosen, "assistant", "chosen")
    rejected_messages = _as_messages(rejected, "assistant", "rejected")
    if prompt is None:
        # Implicit prompt: chosen and rejected are whole conversations sharing their beginning.
        shared = _common_prefix(chosen_messages, rejected_messages)
        while shared and chosen_messages[shared - 1]["role"] == "assistant":
            shared -= 1  # the reply starts at an assistant turn
        if shared == 0:
            raise ValueError(
                "missing field: 'prompt' (and chosen/rejected share no prompt messages)"
            )
        prompt_messages = chosen_messages[:shared]
    else:
        prompt_messages = _as_messages(prompt, "user", "prompt")
        if prompt_messages and not any(m["content"].strip() for m in prompt_messages):
            raise ValueError("empty prompt: the prompt has no text")
    # Drop a repeated prompt at the start of chosen/rejected.
    n = len(prompt_messages)
    if chosen_messages[:n] == prompt_messages and rejected_messages[:n] == prompt_messages:
        chosen_messages, rejected_messages = chosen_messages[n:], rejected_messages[n:]
    return PreferencePair(
        tuple(prompt_messages), tuple(chosen_messages), tuple(rejected_messages), origin
    )


def hh_transcript_messages(text: str) -> list[Message]:
    """ "\\n\\nHuman: a\\n\\nAssistant: b" -> [{user: a}, {assistant: b}]."""
    messages: list[Message] = []
    position = 0
    markers = {HUMAN: "user", ASSISTANT: "assistant"}
    text = text if text.startswith("\n\n") else "\n\n" + text
    while position < len(text):
        starts = {m: text.find(m, position) for m in markers}
        starts = {m: s for m, s in starts.items() if s == position}
        if not starts:
            raise ValueError("bad transcript: expected '\\n\\nHuman:' or '\\n\\nAssistant:' turns")
        marker = next(iter(starts))
        body_start = position + len(marker)
        following = [
            s for s in (text.find(HUMAN, body_start), text.find(ASSISTANT, body_start)) if s >= 0
        ]
        end = min(following) if following else len(text)
        messages.append({"role": markers[marker], "content": text[body_start:end].strip()})
        position = end
    return messages


def split_hh_transcripts(chosen: Any, rejected: Any, origin: str = "") -> PreferencePair:
    """Two HH-RLHF transcripts -> prompt messages and the two final assistant replies."""
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise ValueError("bad transcript: HH-RLHF chosen and rejected must both be strings")
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(ASSISTANT)
    if cut < 0:
        raise ValueError("bad transcript: chosen and rejected share no '\\n\\nAssistant:' turn")
    prompt = hh_transcript_messages(chosen[:cut])
    chosen_reply = chosen[cut + len(ASSISTANT) :].strip()
    rejected_reply = rejected[cut + len(ASSISTANT) :].strip()
    return PreferencePair(
        tuple(prompt),
        ({"role": "assistant", "content": chosen_reply},),
        ({"role": "assistant", "content": rejected_reply},),
        origin,
    )


# -- what the trainers see ------------------------------------------------------------------------


def completion_text(tokenizer: Any, prompt: Sequence[Message], reply: Sequence[Message]) -> str:
    """The rendered reply: the whole conversation minus the generation prompt, through the same
    chat-template function as SFT. Whitespace after the final end-of-turn token is dropped so that
    the trainers do not append a second EOS."""
    prompt_text = format_prompt(tokenizer, prompt)
    full = format_chat(tokenizer, [*prompt, *reply])
    if not full.startswith(prompt_text):
        raise ValueError("chat template renders the prompt differently inside the conversation")
    text = full[len(prompt_text) :]
    eos = getattr(tokenizer, "eos_token", None)
    if eos and text.rstrip().endswith(eos):
        text = text.rstrip()
    return text


def format_pairs(
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    report: PreferenceReport,
    *,
    max_prompt_length: int | None = None,
    long_prompts: LongPromptPolicy = "drop",
) -> list[dict[str, str]]:
    """Pairs -> [{prompt, chosen, rejected}] texts; prompts over `max_prompt_length` tokens are
    dropped (counted in `report`) or cut from the left, keeping the latest turns."""
    rows: list[dict[str, str]] = []
    seen_long: set[str] = set()  # a pair mixed in twice is reported once
    for pair in pairs:
        prompt = format_prompt(tokenizer, pair.prompt)
        if max_prompt_length is not None:
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            if len(ids) > max_prompt_length:
                first = pair.origin not in seen_long
                seen_long.add(pair.origin)
                if long_prompts == "drop":
                    if first:
                        file, _, line = pair.origin.rpartition(":")
                        reason = f"prompt too long: {len(ids)} tokens > limit {max_prompt_length}"
                        report.skip(file, int(line) if line.isdigit() else 0, reason)
                    continue
                # Cut from the left, then BOS in front again (chat_template's rule), in the limit.
                keep = max_prompt_length - (1 if getattr(tokenizer, "bos_token", None) else 0)
                prompt = with_bos(tokenizer, tokenizer.decode(ids[-keep:]))
                report.truncated += int(first)
        prompt = without_auto_bos(tokenizer, prompt)
        rows.append(
            {
                "prompt": prompt,
                "chosen": completion_text(tokenizer, pair.prompt, pair.chosen),
                "rejected": completion_text(tokenizer, pair.prompt, pair.rejected),
            }
        )
    return rows
