"""Data sources: where records come from and how they are read (JSONL, CSV, Parquet, text, Markdown).

A `DataSource` is one entry of a stage's `data:` list. Loading yields located raw records
(file, line, dict); `load_text_docs` / `load_chat_examples` turn them into TextDoc / ChatExample,
count and report unusable ones with file and line, apply `limit`, then the held-out split.

Folders: with `format: auto`, a folder's structured files (.jsonl, .jsonl.gz, .csv, .parquet)
are read when it has any; otherwise its .txt/.md files, one document per file. README*,
LICENSE* and SOURCE* files are documentation and are never read as data.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from alloylm.config.strict import StrictModel
from alloylm.data.records import (
    ChatExample,
    TextDoc,
    TextProblem,
    guess_record_kind,
    record_to_messages,
    record_to_text,
)
from alloylm.data.split import key_text, split_by_key
from alloylm.errors import DataError

FileFormat = Literal["auto", "jsonl", "csv", "parquet", "txt", "md"]
_SUFFIXES: dict[str, str] = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".jsonl.gz": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "txt",
    ".md": "md",
    ".markdown": "md",
}
_STRUCTURED = ("jsonl", "csv", "parquet")
_DOC_PREFIXES = ("readme", "license", "source")
MAX_REPORTED_PROBLEMS = 20


class HoldoutConfig(StrictModel):
    """Hold out the records whose `key` hashes (with `seed`) below `fraction` (see split.py)."""

    fraction: float = Field(gt=0.0, lt=1.0)
    seed: int = 0
    key: str | None = Field(
        None,
        description="record field to group by (e.g. module, title; a list or dict field is "
        "hashed as JSON); none or the text field = the record's own text",
    )


class DataSource(StrictModel):
    path: str
    weight: float = Field(
        1.0, gt=0.0, description="times each record is used: 2.0 twice, 0.5 a seeded half"
    )
    format: FileFormat = "auto"
    text_field: str = "text"
    template: dict[str, str] | None = Field(
        None, description="role -> format string, e.g. {user: 'What is {term}?'}"
    )
    holdout: HoldoutConfig | None = None
    limit: int | None = Field(None, ge=1, description="use only the first N usable records")
    fraction: Literal["sample", "first"] = Field(
        "sample",
        description="the records a fractional weight takes: a seeded sample, or the first ones "
        "in file order (the alignment-handbook's dataset_mixer, as the study ran it)",
    )
    strict: bool = Field(
        False, description="an unusable record is an error (default: skipped, counted, located)"
    )


@dataclass
class LoadReport:
    """Counts and located problems of one source."""

    files: list[str] = field(default_factory=list)
    usable: int = 0
    bad: int = 0
    problems: list[str] = field(default_factory=list)

    def add_problem(self, file: str, line: int | None, reason: str) -> None:
        self.bad += 1
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            where = f"{file}:{line}" if line is not None else file
            self.problems.append(f"{where}: {reason}")


@dataclass
class LoadedSource:
    source: DataSource
    records: list[Any]  # TextDoc or ChatExample, training side
    heldout: list[Any]
    report: LoadReport

    def details(self) -> dict[str, Any]:
        """What a stage records about this source (StageResult.details)."""
        out: dict[str, Any] = {
            "path": self.source.path,
            "weight": self.source.weight,
            "files": self.report.files,
            "usable_records": self.report.usable,
            "bad_records": self.report.bad,
            "problems": self.report.problems,
            "train_records": len(self.records),
        }
        if self.source.holdout is not None:
            out["holdout"] = {
                **self.source.holdout.model_dump(),
                "heldout_records": len(self.heldout),
            }
        return out


def source_files(path: str | Path, fmt: FileFormat = "auto") -> list[Path]:
    """The data files a source path stands for, sorted; a DataError when there are none."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(
            f"data path does not exist: {path}",
            file=str(path),
            hint="check the `path:` of this source",
        )
    candidates = [p for p in sorted(path.rglob("*")) if p.is_file() and not _is_documentation(p)]
    by_format = [(p, file_format(p)) for p in candidates]
    if fmt != "auto":
        files = [p for p, f in by_format if f == fmt or (f is None and fmt in ("txt", "md"))]
    elif any(f in _STRUCTURED for _, f in by_format):
        files = [p for p, f in by_format if f in _STRUCTURED]
    else:
        files = [p for p, f in by_format if f in ("txt", "md")]
    if not files:
        raise DataError(
            f"no data files in folder {path}",
            file=str(path),
            hint="expected .jsonl, .csv, .parquet, .txt or .md files (README/LICENSE/SOURCE are skipped)",
        )
    return files


def file_format(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return _SUFFIXES[suffix]
    return None


def _is_documentation(path: Path) -> bool:
    return path.name.lower().startswith(_DOC_PREFIXES) or path.name.startswith(".")


def iter_raw_records(
    path: str | Path, fmt: FileFormat = "auto", report: LoadReport | None = None
) -> Iterator[tuple[str, int | None, dict[str, Any]]]:
    """(file, line or row number, record) for every readable record of a source path.

    Lines that cannot be parsed are added to `report` (when given) and skipped.
    """
    from alloylm.errors import READ_ERRORS, AlloyError, unreadable_file

    report = report if report is not None else LoadReport()
    for file in source_files(path, fmt):
        kind = fmt if fmt != "auto" else file_format(file)
        report.files.append(str(file))
        readers = {
            "jsonl": lambda f: _read_jsonl(f, report),
            "csv": _read_csv,
            "parquet": _read_parquet,
        }
        if kind in readers:
            try:
                yield from readers[kind](file)
            except AlloyError:
                raise
            except READ_ERRORS as error:  # csv.Error is not one of them: below
                raise unreadable_file(file, error) from None
            except csv.Error as error:
                raise unreadable_file(file, error) from None
        elif kind in ("txt", "md"):
            yield (
                str(file),
                None,
                {"text": file.read_text(encoding="utf-8", errors="replace"), "title": file.stem},
            )
        else:
            raise DataError(
                f"unknown file format of {file.name}",
                file=str(file),
                hint="set `format:` (jsonl, csv, parquet, txt, md)",
            )


def _read_jsonl(file: Path, report: LoadReport) -> Iterator[tuple[str, int, dict[str, Any]]]:
    from alloylm.data.jsonl import iter_jsonl

    def bad_line(number: int, problem: str) -> None:
        report.add_problem(str(file), number, problem)

    for number, record in iter_jsonl(file, objects=True, on_error=bad_line):
        yield str(file), number, record


def _read_csv(file: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    with open(file, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for record in reader:
            yield str(file), reader.line_num, {k: v for k, v in record.items() if k is not None}


def _read_parquet(file: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    for row, record in enumerate(pq.read_table(file).to_pylist(), start=1):
        yield str(file), row, record


def load_text_docs(source: DataSource) -> LoadedSource:
    """TextDoc records of a source (CPT): the `text_field` of each record, or whole text files."""

    def convert(record: Mapping[str, Any]) -> str | TextProblem:
        return record_to_text(record, source.text_field)

    return _load(
        source,
        convert,
        lambda text, file, line, record: TextDoc(text, file, line, _meta(record, source)),
    )


def load_chat_examples(source: DataSource) -> LoadedSource:
    """ChatExample records of a source (SFT), detected per record or built by its `template`."""

    def convert(record: Mapping[str, Any]) -> list[dict[str, str]] | TextProblem:
        return record_to_messages(record, source.template)

    return _load(
        source,
        convert,
        lambda msgs, file, line, record: ChatExample(
            tuple(msgs), file, line, _meta(record, source)
        ),
    )


def _meta(record: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
    """Scalar fields kept beside a record (titles, modules...) for holdout keys and heldout.jsonl."""
    skip = {source.text_field, "messages"}
    return {
        k: v for k, v in record.items() if k not in skip and isinstance(v, str | int | float | bool)
    }


def _load(source: DataSource, convert: Any, build: Any) -> LoadedSource:
    report = LoadReport()
    items: list[Any] = []
    keys: list[str] = []  # the holdout key of each item
    for file, line, record in iter_raw_records(source.path, source.format, report):
        if source.limit is not None and len(items) >= source.limit:
            break
        value = convert(record)
        if isinstance(value, TextProblem):
            report.add_problem(file, line, value)
            continue
        if source.holdout is not None and source.holdout.key and source.holdout.key not in record:
            report.add_problem(file, line, f"no {source.holdout.key!r} field for the holdout key")
            continue
        item = build(value, file, line, record)
        items.append(item)
        if source.holdout is not None:
            keys.append(_holdout_key(item, record, source))
    report.usable = len(items)
    if source.strict and report.bad:
        raise DataError(
            f"{report.bad} unusable records (strict: true); first: {report.problems[0]}",
            file=source.path,
            key="strict",
            hint="fix those records, or drop `strict: true` to skip them (counted in alloy.json)",
        )
    if not items:
        details = "; ".join(report.problems[:3]) or "no records"
        raise DataError(
            f"no usable records in {source.path} ({report.bad} bad): {details}",
            file=source.path,
            hint="check text_field / template, or the file format",
        )
    if source.holdout is None:
        return LoadedSource(source, items, [], report)
    holdout = source.holdout
    kept_pairs, heldout_pairs = split_by_key(
        list(zip(items, keys, strict=True)), lambda pair: pair[1], holdout.fraction, holdout.seed
    )
    kept = [item for item, _ in kept_pairs]
    heldout = [item for item, _ in heldout_pairs]
    if not kept or not heldout:
        side = "training" if not kept else "held-out"
        raise DataError(
            f"holdout fraction {holdout.fraction} leaves the {side} side of {source.path} empty "
            f"({len(items)} records, key {holdout.key!r})",
            file=source.path,
            key="holdout.fraction",
            hint="change the fraction or the key (a key with few distinct values splits coarsely)",
        )
    return LoadedSource(source, kept, heldout, report)


def _holdout_key(item: TextDoc | ChatExample, record: Mapping[str, Any], source: DataSource) -> str:
    """The text a record's holdout split hashes: its `key` field, or the record's own text.

    Any field works: a list or dict (e.g. `messages`, `authors`) is hashed as sorted JSON, so
    records with equal values stay together; the text field itself means the document's text,
    as when no key is given.
    """
    key = source.holdout.key if source.holdout is not None else None
    if key is not None and key != source.text_field:
        return key_text(record[key])
    if isinstance(item, TextDoc):
        return item.text
    return key_text(list(item.messages))


def detect_data_kind(
    path: str | Path,
    *,
    text_field: str = "text",
    template: Mapping[str, str] | None = None,
    fmt: FileFormat = "auto",
    peek: int = 5,
) -> str:
    """'text' | 'chat' | 'preference' | 'benchmark' | 'unknown' from the first records of `path`.

    Used before any work to refuse, e.g., an SFT stage given raw text only. A source with a
    `template` is 'chat'. The most specific kind among the peeked records wins.
    """
    if template:
        return "chat"
    kinds: list[str] = []
    for _, _, record in iter_raw_records(path, fmt):
        kinds.append(guess_record_kind(record, text_field))
        if len(kinds) >= peek:
            break
    for kind in ("preference", "benchmark", "chat", "text"):
        if kind in kinds:
            return kind
    return "unknown"


def heldout_rows(loaded: list[LoadedSource]) -> list[dict[str, Any]]:
    """heldout.jsonl rows: {text, source, ...meta} for text docs, {messages, source, ...} for chats."""
    rows: list[dict[str, Any]] = []
    for part in loaded:
        for item in part.heldout:
            body = (
                {"text": item.text}
                if isinstance(item, TextDoc)
                else {"messages": list(item.messages)}
            )
            rows.append({**item.meta, **body, "source": item.file})
    return rows
