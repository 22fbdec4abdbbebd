"""Cleaning, loading (.md/.txt/.jsonl/.pdf) and token chunking with overlap and section titles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alloylm.distill.ingest import (
    Document,
    chunk_document,
    chunk_token_windows,
    clean_text,
    load_documents,
    split_sections,
)
from alloylm.errors import DataError


def test_clean_removes_page_breaks_page_numbers_repeats_and_unknown_symbols() -> None:
    raw = "Silk is strong.\f\n12\nPage 3 of 9\nTable of contents........ 4\nbeta\ufffd sheet\ue000s\x07 ====== end"
    text = clean_text(raw)
    assert "\f" not in text and "12" not in text.split() and "Page 3" not in text
    assert "........" not in text and "contents. 4" in text
    assert "\ufffd" not in text and "\ue000" not in text and "\x07" not in text
    assert "beta sheet s" in text and "= end" in text


def test_clean_joins_words_hyphenated_across_lines() -> None:
    assert clean_text("fibro-\nblasts make collagen") == "fibroblasts make collagen"


def test_token_windows_overlap_hand_computed() -> None:
    tokens = [str(i) for i in range(10)]
    windows = chunk_token_windows(tokens, max_tokens=4, overlap=1)
    assert windows == [["0", "1", "2", "3"], ["3", "4", "5", "6"], ["6", "7", "8", "9"]]
    assert chunk_token_windows(tokens[:3], 4, 1) == [["0", "1", "2"]]
    with pytest.raises(ValueError):
        chunk_token_windows(tokens, 4, 4)


def test_chunks_keep_their_section_title_and_never_span_sections() -> None:
    body_a = " ".join(f"a{i}" for i in range(25))
    text = f"Intro words here.\n\n## Bone Structure\n{body_a}\n\n## Muscle\nshort muscle text"
    assert [title for title, _ in split_sections(text)] == ["", "Bone Structure", "Muscle"]
    chunks = chunk_document(Document("d", "Doc", text, "x"), max_tokens=10, overlap=2)
    bone = [c for c in chunks if c.section == "Bone Structure"]
    assert len(bone) == 3  # 25 tokens, windows of 10 stepping 8: 0-9, 8-17, 16-24
    assert all(c.text.startswith("## Bone Structure\n") for c in bone)
    assert bone[1].text.split()[3:5] == ["a8", "a9"]  # the overlap
    assert chunks[-1].text == "## Muscle\nshort muscle text"
    assert [c.chunk_id for c in chunks] == [f"d#{i}" for i in range(len(chunks))]


def test_chunking_with_a_model_tokenizer_counts_its_tokens() -> None:
    def chars(text: str) -> list[str]:  # one token per character: long words count more
        return list(text.strip())

    chunks = chunk_document(
        Document("d", "D", "aaaa bbbb cccc dddd", "x"), max_tokens=9, overlap=4, tokenize=chars
    )
    assert [c.text for c in chunks] == ["aaaa bbbb", "bbbb cccc", "cccc dddd"]


def _minimal_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica, offsets computed (no PDF writer needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def test_load_documents_reads_pdf_md_txt_jsonl_from_a_folder(tmp_path: Path) -> None:
    (tmp_path / "paper.pdf").write_bytes(_minimal_pdf("Spider silk has high toughness."))
    (tmp_path / "notes.md").write_text("# Title\nCollagen is a protein.")
    (tmp_path / "plain.txt").write_text("Keratin forms hair.")
    rows = [
        {"id": "s1", "title": "Sec", "text": "Bone is a composite."},
        {"text": "Cartilage is avascular."},
    ]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "ignored.csv").write_text("a,b")
    docs = {d.doc_id: d for d in load_documents([tmp_path])}
    assert set(docs) == {"paper", "notes", "plain", "s1", "corpus:2"}
    assert "Spider silk has high toughness." in docs["paper"].text
    assert docs["s1"].title == "Sec" and docs["s1"].source.endswith("corpus.jsonl:1")
    assert len(load_documents([tmp_path], limit=2)) == 2


def test_bad_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"body": "no text key"}\n')
    with pytest.raises(DataError) as error:
        load_documents([path])
    assert (
        error.value.line == 2 and "bad.jsonl" in str(error.value) and "text_key" in str(error.value)
    )
    with pytest.raises(DataError):
        load_documents([tmp_path / "missing"])
