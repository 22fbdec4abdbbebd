"""From configured paths to deduplicated chunks, cached by input hash for unchanged reruns."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from alloylm.atomic import atomic_write_json
from alloylm.distill.config import DistillConfig
from alloylm.distill.dedup import dedup
from alloylm.distill.ingest import (
    Chunk,
    Document,
    chunk_documents,
    load_documents,
    whitespace_tokens,
)
from alloylm.hashing import hash_json, sha256_path


def ingest(
    cfg: DistillConfig, log: Any = print
) -> tuple[list[Document], list[Chunk], dict[str, int]]:
    docs = (
        load_documents(cfg.paths, text_key=cfg.text_key, limit=cfg.max_documents)
        if cfg.paths
        else []
    )
    removed = {"documents_exact": 0, "documents_near": 0, "chunks_exact": 0, "chunks_near": 0}
    if cfg.dedup.enabled and docs:
        docs, gone = dedup(
            docs,
            lambda d: d.text,
            threshold=cfg.dedup.threshold,
            shingle_size=cfg.dedup.shingle_size,
        )
        removed["documents_exact"], removed["documents_near"] = gone["exact"], gone["near"]
    tokenize = whitespace_tokens
    if cfg.chunking.tokenizer:
        from alloylm.models.loading import load_tokenizer
        from alloylm.models.sources import resolve_model

        tokenizer = load_tokenizer(resolve_model(cfg.chunking.tokenizer))
        tokenize = tokenizer.tokenize
    chunks = chunk_documents(
        docs, max_tokens=cfg.chunking.max_tokens, overlap=cfg.chunking.overlap, tokenize=tokenize
    )
    if cfg.dedup.enabled and chunks:
        chunks, gone = dedup(
            chunks,
            lambda c: c.text,
            threshold=cfg.dedup.threshold,
            shingle_size=cfg.dedup.shingle_size,
        )
        removed["chunks_exact"], removed["chunks_near"] = gone["exact"], gone["near"]
    if cfg.max_chunks:
        chunks = chunks[: cfg.max_chunks]
    log(f"{len(docs)} documents, {len(chunks)} chunks after cleaning and dedup")
    return docs, chunks, removed


def cached_ingest(
    cfg: DistillConfig, state_dir: Path, log: Any = print
) -> tuple[list[Document], list[Chunk], dict[str, int]]:
    """`ingest`, stored in state_dir by the hash of the input files and the ingestion settings.

    An unchanged rerun then skips cleaning, chunking and MinHash entirely.
    """
    settings = cfg.model_dump(
        include={"paths", "text_key", "max_documents", "max_chunks", "chunking", "dedup"}
    )
    files = [
        str(p)
        for root in map(Path, cfg.paths)
        for p in ([root] if root.is_file() else sorted(root.rglob("*")))
    ]
    key = hash_json([settings, [(f, sha256_path(f)) for f in files if Path(f).is_file()]])
    path = state_dir / f"ingest-{key[:16]}.json"
    if path.is_file():
        data = json.loads(path.read_text())
        docs = [Document(**d) for d in data["documents"]]
        chunks = [Chunk(**c) for c in data["chunks"]]
        log(f"{len(docs)} documents, {len(chunks)} chunks (ingestion cached)")
        return docs, chunks, data["removed"]
    docs, chunks, removed = ingest(cfg, log)
    payload = {
        "documents": [asdict(d) for d in docs],
        "chunks": [asdict(c) for c in chunks],
        "removed": removed,
    }
    atomic_write_json(path, payload)
    return docs, chunks, removed
