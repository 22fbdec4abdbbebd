"""Documents in (.pdf, .md, .txt, .jsonl), clean text out, then token chunks that keep section titles.

Cleaning removes the noise the study names for PDF-extracted papers: page breaks and running
page numbers, runs of repeated characters (dot leaders, rules), and unknown symbols (replacement
characters, private-use glyphs, control characters).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alloylm.data.jsonl import iter_jsonl
from alloylm.errors import DataError
from alloylm.hashing import hash_text

SUFFIXES = (".pdf", ".md", ".markdown", ".txt", ".jsonl")
TokenCounter = Callable[[str], list[str]]


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str
    source: str  # file (and line for JSONL) it came from


@dataclass(frozen=True)
class Chunk:
    chunk_id: str  # "<doc_id>#<index>"
    doc_id: str
    title: str  # the document title
    section: str  # the nearest section heading ("" when none)
    text: str  # section heading line + body, as the teacher sees it
    n_tokens: int
    meta: dict = field(default_factory=dict, compare=False, hash=False)


# ---------------------------------------------------------------- cleaning

_PAGE_NUMBER_LINE = re.compile(r"^\s*(page\s+)?\d{1,4}(\s+of\s+\d{1,4})?\s*$", re.IGNORECASE)
_REPEATED_CHARS = re.compile(r"([^\w\s])\1{3,}|(\w)\2{5,}")
_HYPHEN_BREAK = re.compile(r"(\w)-\n(\w)")


def _is_unknown_symbol(char: str) -> bool:
    if char in "\n\t":
        return False
    if char == "\ufffd":
        return True
    category = unicodedata.category(char)
    # Cc control, Co private use (font glyphs PDF extractors cannot map), Cn unassigned, Cs surrogate.
    return category in ("Cc", "Co", "Cn", "Cs")


def clean_text(text: str) -> str:
    """Remove page breaks, page-number lines, repeated-character runs and unknown symbols."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    # Decide once per distinct character (a text has few), then replace in one C-level pass.
    text = text.translate({ord(c): " " for c in set(text) if _is_unknown_symbol(c)})
    text = _HYPHEN_BREAK.sub(r"\1\2", text)  # words split across a line break by the typesetter
    text = _REPEATED_CHARS.sub(lambda m: m.group(1) or m.group(2), text)
    lines = [line for line in text.split("\n") if not _PAGE_NUMBER_LINE.match(line)]
    text = "\n".join(re.sub(r"[ \t]+", " ", line).strip() for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# ---------------------------------------------------------------- loading


def pdf_text(path: Path) -> str:
    """Text of a PDF: Marker or Docling when installed (layout-aware, as the study used), else pypdf."""
    try:  # pragma: no cover - optional engines, not installed in CI
        from docling.document_converter import DocumentConverter

        return DocumentConverter().convert(str(path)).document.export_to_markdown()
    except ImportError:
        pass
    try:  # pragma: no cover
        from marker.converters.pdf import PdfConverter
        from marker.models import create_model_dict
        from marker.output import text_from_rendered

        return text_from_rendered(PdfConverter(artifact_dict=create_model_dict())(str(path)))[0]
    except ImportError:
        pass
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    return "\n\f".join(page.extract_text() or "" for page in reader.pages)


def _jsonl_documents(path: Path, text_key: str) -> Iterable[Document]:
    for line_number, record in iter_jsonl(path):
        if not isinstance(record, dict) or not isinstance(record.get(text_key), str):
            raise DataError(
                f"expected an object with a string {text_key!r}",
                file=str(path),
                line=line_number,
                hint="set `text_key` to the field that holds the document text",
            )
        title = str(record.get("title") or record.get("section") or path.stem).strip()
        doc_id = str(record.get("id") or record.get("module") or f"{path.stem}:{line_number}")
        yield Document(doc_id, title, record[text_key], f"{path}:{line_number}")


def load_documents(
    paths: Sequence[str | Path], *, text_key: str = "text", limit: int | None = None
) -> list[Document]:
    """Read every supported file in `paths` (files or folders, searched recursively), cleaned; at most `limit`."""
    files: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            files.extend(sorted(p for p in entry.rglob("*") if p.suffix.lower() in SUFFIXES))
        elif entry.is_file():
            files.append(entry)
        else:
            raise DataError(
                "no such file or folder", file=str(entry), hint="check `paths` in the distill stage"
            )
    documents: list[Document] = []
    for path in files:
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            raw: Iterable[Document] = _jsonl_documents(path, text_key)
        elif suffix == ".pdf":
            raw = [Document(path.stem, path.stem, pdf_text(path), str(path))]
        elif suffix in (".md", ".markdown", ".txt"):
            raw = [
                Document(
                    path.stem,
                    path.stem,
                    path.read_text(encoding="utf-8", errors="replace"),
                    str(path),
                )
            ]
        else:
            raise DataError(
                f"unsupported file type {suffix!r}",
                file=str(path),
                hint=f"use one of {', '.join(SUFFIXES)}",
            )
        for doc in raw:
            text = clean_text(doc.text)
            if text:
                documents.append(Document(doc.doc_id, doc.title, text, doc.source))
            if limit is not None and len(documents) >= limit:
                return documents
    return documents


# ---------------------------------------------------------------- chunking


def whitespace_tokens(text: str) -> list[str]:
    """Default token counter: whitespace-separated words (no model needed)."""
    return text.split()


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*$")


def split_sections(text: str) -> list[tuple[str, list[str]]]:
    """[(section heading, paragraphs)] from Markdown-style '#' headings; text before any heading has ''."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for block in re.split(r"\n\s*\n|\n(?=#)", text):
        lines = block.strip().split("\n")
        match = _HEADING.match(lines[0]) if lines and lines[0] else None
        if match:
            sections.append((match.group(2).strip(), []))
            lines = lines[1:]
        body = "\n".join(lines).strip()
        if body:
            sections[-1][1].append(body)
    return [(title, paras) for title, paras in sections if paras]


def chunk_token_windows(tokens: list[str], max_tokens: int, overlap: int) -> list[list[str]]:
    """Windows of at most `max_tokens` tokens; consecutive windows share `overlap` tokens."""
    if max_tokens <= 0 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens > 0 and 0 <= overlap < max_tokens")
    if len(tokens) <= max_tokens:
        return [tokens] if tokens else []
    step = max_tokens - overlap
    windows = []
    for start in range(0, len(tokens), step):
        windows.append(tokens[start : start + max_tokens])
        if start + max_tokens >= len(tokens):
            break
    return windows


def chunk_document(
    doc: Document,
    *,
    max_tokens: int = 512,
    overlap: int = 64,
    tokenize: TokenCounter = whitespace_tokens,
) -> list[Chunk]:
    """Chunks of at most `max_tokens` body tokens per section, overlapping by `overlap` tokens.

    A chunk never spans two sections, and each chunk starts with its section's heading so that
    the teacher (and the CPT text) keeps the context the title gives.
    """
    chunks: list[Chunk] = []
    for section, paragraphs in split_sections(doc.text):
        words = " \n".join(paragraphs).split(" ")
        # Chunk on words (keeps text reconstructible), counting tokens with `tokenize`.
        windows = _windows_by_token_count(words, max_tokens, overlap, tokenize)
        for window in windows:
            body = " ".join(window).strip()
            heading = f"## {section}\n" if section else ""
            index = len(chunks)
            chunks.append(
                Chunk(
                    f"{doc.doc_id}#{index}",
                    doc.doc_id,
                    doc.title,
                    section,
                    heading + body,
                    len(tokenize(body)),
                )
            )
    return chunks


def _windows_by_token_count(
    words: list[str], max_tokens: int, overlap: int, tokenize: TokenCounter
) -> list[list[str]]:
    if tokenize is whitespace_tokens:
        return chunk_token_windows(words, max_tokens, overlap)
    counts = [max(1, len(tokenize(" " + w))) for w in words]
    windows, start = [], 0
    while start < len(words):
        end, total = start, 0
        while end < len(words) and (total + counts[end] <= max_tokens or end == start):
            total += counts[end]
            end += 1
        windows.append(words[start:end])
        if end >= len(words):
            break
        back, kept = end, 0
        while back > start + 1 and kept + counts[back - 1] <= overlap:
            back -= 1
            kept += counts[back]
        start = back
    return windows


def chunk_documents(
    docs: Sequence[Document],
    *,
    max_tokens: int = 512,
    overlap: int = 64,
    tokenize: TokenCounter = whitespace_tokens,
) -> list[Chunk]:
    return [
        c
        for d in docs
        for c in chunk_document(d, max_tokens=max_tokens, overlap=overlap, tokenize=tokenize)
    ]


def text_fingerprint(text: str) -> str:
    return hash_text(" ".join(text.lower().split()))
