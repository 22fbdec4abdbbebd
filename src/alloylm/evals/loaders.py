"""Benchmark files -> eval items, in every layout alloylm knows, plus a column mapping for the rest.

Recognised without a mapping:
- JSONL with `question`, `choices`, `answer` (letter, index, choice text or True/False), optional
  `answer_index`, `category`/`topic`/`subject`, `id`; MaScQA's `type` (MCQS/MATCH/MCQS-NUM/NUM),
  `answer_ranges` and `void` are understood;
- MMLU-style CSV without a header: question, option columns, gold letter last;
- the study's layout (CSV or JSONL): `question_type` MC/TF, `Question` with the options written
  inside the text as "A) ... B) ...", `Answer` letter or True/False, `Category`;
- BIG-bench task JSON: {"examples": [{"input", "target_scores"} or {"input", "target"}]}.

A `mapping` ({"question": "Stem", "answer": "Key", "choices": ["o1", "o2"], ...}) renames columns
of any other CSV/JSONL layout. Bad records are skipped, each reported with file and line.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from alloylm.errors import DataError
from alloylm.evals.tasks import LETTERS, MAX_CHOICES, MIN_CHOICES, Item, LoadReport, true_false_item

Mapping_ = Mapping[str, Any]
# "A) text", "(A) text" inside a question; letters must run A, B, C... in order.
_INLINE_OPTION = re.compile(r"(?:^|(?<=\s))\(?([A-J])\)\s+")
_CATEGORY_KEYS = ("category", "topic", "subject", "chapter")
_TF_WORDS = {"true": True, "t": True, "false": False, "f": False}
_MASCQA_CHOICE_TYPES = {"MCQS", "MATCH", "MCQS-NUM"}


def load_items(path: str | Path, mapping: Mapping_ | None = None) -> LoadReport:
    """Read a benchmark file into items; skipped records are listed in the report, never fatal."""
    path = Path(path)
    if not path.is_file():
        raise DataError("benchmark file not found", file=str(path), hint="check the task's path")
    report = LoadReport(file=str(path))
    suffix = path.suffix.lower()
    if suffix == ".csv":
        records = _csv_records(path, report, header=bool(mapping))
    elif suffix == ".json":
        records = _json_records(path, report)
    elif suffix in (".jsonl", ".ndjson"):
        records = _jsonl_records(path, report)
    else:
        raise DataError(
            f"unknown benchmark format {suffix!r}",
            file=str(path),
            hint="use .jsonl (question/choices/answer), .csv (MMLU or the study's layout) or BIG-bench .json",
        )
    for line, record in records:
        record = _apply_mapping(record, mapping) if mapping else record
        try:
            item = record_to_item(record, default_id=f"{path.stem}/{line}")
        except ValueError as error:
            report.skip(line, str(error))
            continue
        if item is not None:
            report.items.append(_with_line(item, line))
    return report


def _with_line(item: Item, line: int) -> Item:
    from dataclasses import replace

    return replace(item, line=line)


def _jsonl_records(path: Path, report: LoadReport) -> Iterator[tuple[int, dict[str, Any]]]:
    from alloylm.data.jsonl import iter_jsonl

    yield from iter_jsonl(path, objects=True, on_error=report.skip)


def _json_records(path: Path, report: LoadReport) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(
            f"malformed JSON ({error.msg})", file=str(path), line=error.lineno
        ) from None
    if isinstance(data, dict) and isinstance(data.get("examples"), list):
        for number, example in enumerate(data["examples"], start=1):
            yield number, _bigbench_record(example)
    elif isinstance(data, list):
        yield from ((number, record) for number, record in enumerate(data, start=1))
    else:
        raise DataError(
            "expected a BIG-bench task ({'examples': [...]}) or a list of records",
            file=str(path),
            hint="or convert the file to JSONL with question/choices/answer",
        )


def _bigbench_record(example: Any) -> dict[str, Any]:
    if not isinstance(example, dict) or "input" not in example:
        return {}
    if isinstance(example.get("target_scores"), dict):
        choices = list(example["target_scores"])
        best = [
            index for index, choice in enumerate(choices) if example["target_scores"][choice] == 1
        ]
        answer = best[0] if len(best) == 1 else None
        return {"question": example["input"], "choices": choices, "answer": answer}
    target = example.get("target")
    target = target[0] if isinstance(target, list) and target else target
    return {"question": example["input"], "answer": target}


def _csv_records(
    path: Path, report: LoadReport, *, header: bool
) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    columns = [cell.strip() for cell in rows[0]]
    has_header = header or any(
        cell.lower() in ("question", "question_type", "prompt", "stem") for cell in columns
    )
    if has_header:
        for number, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                report.skip(number, f"expected {len(columns)} columns, got {len(row)}")
                continue
            yield number, dict(zip(columns, row, strict=True))
        return
    # MMLU layout: question, option columns, gold letter; the file name gives the subject.
    report.subject = path.stem.removesuffix("_test").removesuffix("_dev").replace("_", " ")
    for number, row in enumerate(rows, start=1):
        if len(row) < 1 + MIN_CHOICES + 1:
            report.skip(
                number,
                f"expected question, at least {MIN_CHOICES} options and an answer letter; got {len(row)} columns",
            )
            continue
        yield number, {"question": row[0], "choices": row[1:-1], "answer": row[-1]}


def _apply_mapping(record: dict[str, Any], mapping: Mapping_) -> dict[str, Any]:
    """Rename columns: mapping maps our field name to the file's column (a list for choices)."""
    renamed = dict(record)
    for field_name, column in mapping.items():
        if isinstance(column, list | tuple):
            renamed[field_name] = [record.get(name) for name in column]
        elif column in record:
            renamed[field_name] = record[column]
    return renamed


def _field(record: Mapping_, *names: str) -> Any:
    lowered = {str(key).lower(): value for key, value in record.items()}
    for name in names:
        if name in lowered and lowered[name] not in (None, ""):
            return lowered[name]
    return None


def record_to_item(record: Mapping_, default_id: str) -> Item | None:
    """One record -> an item. Raises ValueError with the reason when it cannot be scored."""
    if not record:
        raise ValueError("record has no question")
    if record.get("void") is True:
        raise ValueError("void question (no valid key)")
    question = _field(record, "question", "stem", "prompt", "input")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("no question text")
    item_id = str(_field(record, "id") or default_id)
    category = _field(record, *_CATEGORY_KEYS)
    category = str(category) if category is not None else None
    kind_hint = str(_field(record, "question_type", "type") or "").strip().upper()
    common = {"id": item_id, "category": category}
    if kind_hint == "NUM" or record.get("answer_ranges"):
        return _numeric_item(record, question, common)
    answer = _field(record, "answer")
    if answer is None:
        answer = _field(record, "answer_index")
    if answer is None:
        raise ValueError("no answer key")
    if kind_hint in ("TF", "T/F", "TRUE_FALSE", "TRUE/FALSE"):
        return true_false_item(question=question.strip(), truth=_true_false(answer), **common)
    choices = _field(record, "choices", "options")
    stem = str(_field(record, "stem") or question)
    if choices is None:
        stem, choices = split_inline_options(question)
        if (
            not choices
            and str(answer).strip().lower() in _TF_WORDS
            and kind_hint not in {"MC", "MCQ"} | _MASCQA_CHOICE_TYPES
        ):
            return true_false_item(question=question.strip(), truth=_true_false(answer), **common)
    if isinstance(choices, str):  # one CSV cell: a JSON list, or options separated by "|"
        choices = _split_choices_cell(choices)
    choices = [str(choice).strip() for choice in choices or [] if choice not in (None, "")]
    if not MIN_CHOICES <= len(choices) <= MAX_CHOICES:
        raise ValueError(f"expected {MIN_CHOICES} to {MAX_CHOICES} options, found {len(choices)}")
    index = answer_to_index(answer, choices)
    return Item(
        kind="mcq", question=stem.strip(), choices=tuple(choices), answer_index=index, **common
    )


def _split_choices_cell(cell: str) -> list[str]:
    text = cell.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return [str(choice) for choice in parsed]
    return text.split("|")


def _numeric_item(record: Mapping_, question: str, common: dict[str, Any]) -> Item:
    ranges = record.get("answer_ranges")
    if not ranges:
        answer = _field(record, "answer")
        try:
            value = float(str(answer).strip())
        except (TypeError, ValueError):
            raise ValueError(
                f"numeric question needs answer_ranges or a number, got {answer!r}"
            ) from None
        ranges = [[value, value]]
    try:
        parsed = tuple((float(low), float(high)) for low, high in ranges)
    except (TypeError, ValueError):
        raise ValueError(f"answer_ranges must be [[low, high], ...], got {ranges!r}") from None
    return Item(kind="numeric", question=question.strip(), answer_ranges=parsed, **common)


def _true_false(answer: Any) -> bool:
    if isinstance(answer, bool):
        return answer
    word = str(answer).strip().strip(".").lower()
    if word not in _TF_WORDS:
        raise ValueError(f"true/false question has answer {answer!r}; expected True or False")
    return _TF_WORDS[word]


def answer_to_index(answer: Any, choices: list[str]) -> int:
    """Gold answer (letter, 'B)', index, or the option's text) -> option index."""
    if isinstance(answer, bool):
        raise ValueError(f"answer {answer!r} is True/False but the question has options")
    if isinstance(answer, int):
        index = answer
    else:
        text = str(answer).strip()
        letter = text.rstrip(").:").lstrip("(").strip()
        if len(letter) == 1 and letter.upper() in LETTERS:
            index = LETTERS.index(letter.upper())
        elif text.isdigit():
            index = int(text)
        elif text in choices:
            index = choices.index(text)
        else:
            raise ValueError(f"answer {text!r} is not a letter, an index or one of the options")
    if not 0 <= index < len(choices):
        raise ValueError(f"answer {answer!r} is outside the {len(choices)} options")
    return index


def split_inline_options(text: str) -> tuple[str, list[str]]:
    """'Stem A) one B) two' -> ('Stem', ['one', 'two']); options must run A, B, C, ... in order."""
    matches = list(_INLINE_OPTION.finditer(text))
    starts: list[re.Match[str]] = []
    for match in matches:
        if match.group(1) == LETTERS[len(starts)]:
            starts.append(match)
            if len(starts) == MAX_CHOICES:
                break
    if len(starts) < MIN_CHOICES:
        return text, []
    options = []
    for position, match in enumerate(starts):
        end = starts[position + 1].start() if position + 1 < len(starts) else len(text)
        options.append(text[match.end() : end].strip())
    return text[: starts[0].start()].strip(), options


def split_units(text: str, min_chars: int) -> list[str]:
    """`text` cut at blank lines into units of at least `min_chars` characters (paragraphs joined
    in order; a short tail joins the last unit). More units give perplexity's document bootstrap
    an interval worth reading; each unit is scored on its own, so context does not cross them."""
    paragraphs = [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]
    units: list[str] = []
    current: list[str] = []
    for paragraph in paragraphs:
        current.append(paragraph)
        if sum(len(part) for part in current) >= min_chars:
            units.append("\n\n".join(current))
            current = []
    if current:
        if units:
            units[-1] = "\n\n".join([units[-1], *current])
        else:
            units.append("\n\n".join(current))
    return units


def load_documents(
    path: str | Path,
    *,
    text_field: str = "text",
    limit: int | None = None,
    unit_chars: int | None = None,
) -> list[str]:
    """Held-out text for perplexity: a JSONL of documents with a text field, or any text file.

    With `unit_chars`, every document is cut at blank lines into scoring units of at least that
    many characters (`split_units`): the bootstrap resamples units, and one long text file is no
    longer a single unit without an interval."""
    path = Path(path)
    if not path.is_file():
        raise DataError("held-out text file not found", file=str(path))
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        documents = [path.read_text(encoding="utf-8")]
    else:
        from alloylm.data.jsonl import iter_jsonl

        documents = []
        for number, record in iter_jsonl(path):
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise DataError(
                    f"no string field {text_field!r}",
                    file=str(path),
                    line=number,
                    hint="set text_field",
                )
            documents.append(text)
    if unit_chars:
        documents = [unit for doc in documents for unit in split_units(doc, unit_chars)]
    documents = [doc for doc in documents if doc.strip()][:limit]
    if not documents:
        raise DataError("no text to measure perplexity on", file=str(path))
    return documents
