"""Ingestion is cached by input hash: an unchanged rerun skips it, a changed file does not."""

from __future__ import annotations

from pathlib import Path

from alloylm.distill.corpus import cached_ingest
from alloylm.stages.distill import Config


def test_ingestion_cache_hit_and_invalidation(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Bone\n" + " ".join(f"w{i}" for i in range(50)))
    (docs / "b.md").write_text(
        "# Bone\n" + " ".join(f"w{i}" for i in range(50))
    )  # exact duplicate of a.md
    cfg = Config(kind="distill", paths=[str(docs)], chunking={"max_tokens": 20, "overlap": 4})
    logs: list[str] = []
    first = cached_ingest(cfg, tmp_path / "state", logs.append)
    assert len(first[0]) == 1 and first[2]["documents_exact"] == 1 and len(first[1]) == 3
    second = cached_ingest(cfg, tmp_path / "state", logs.append)
    assert second == first and "ingestion cached" in logs[-1]
    (docs / "b.md").write_text("# Muscle\n" + " ".join(f"m{i}" for i in range(30)))
    third = cached_ingest(cfg, tmp_path / "state", logs.append)
    assert len(third[0]) == 2 and "cached" not in logs[-1]
    other = cached_ingest(cfg.model_copy(update={"max_chunks": 1}), tmp_path / "state", logs.append)
    assert len(other[1]) == 1 and "cached" not in logs[-1]
