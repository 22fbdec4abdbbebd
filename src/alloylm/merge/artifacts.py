"""Lineage of merge outputs: parents, per-variant manifests (alloy.json + model card)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alloylm.hashing import hash_json
from alloylm.lineage import read_manifest, write_manifest
from alloylm.merge.engine import MergeReport, PreparedMerge


def parents(prepared: PreparedMerge) -> list[dict[str, Any]]:
    """The merged models, base first: role, source, local path and (for artifacts) content hash."""
    rows = []
    for source, folder in zip(prepared.model_ids, prepared.folders, strict=True):
        manifest = read_manifest(folder) or {}
        role = "base_model" if source == prepared.settings.base_model else "model"
        rows.append(
            {
                "role": role,
                "source": source,
                "path": str(folder),
                "hash": manifest.get("content_hash"),
            }
        )
    return rows


def variant_config(
    prepared: PreparedMerge, name: str | None, parameters: dict[str, Any]
) -> dict[str, Any]:
    config = prepared.settings.model_dump(mode="json", exclude_none=True)
    config.pop("sweep", None)
    config["variant"] = name
    config["parameters"] = parameters
    return config


def write_variant_manifest(
    folder: Path,
    prepared: PreparedMerge,
    report: MergeReport,
    parameters: dict[str, Any],
    *,
    stage: str,
    run_name: str | None = None,
    wall_time_s: float | None = None,
) -> dict[str, Any]:
    """alloy.json and model card for one merge output (used outside the pipeline runner)."""
    config = variant_config(prepared, report.name, parameters)
    lineage = parents(prepared)
    return write_manifest(
        folder,
        stage=stage,
        kind="merge",
        produces="model",
        config=config,
        parents=lineage,
        content_hash=hash_json({"config": config, "parents": lineage}),
        seed=prepared.settings.seed or 0,
        metrics=report.summary(),
        details={
            "linear_fallback_names": report.linear_fallback_names,
            "warnings": prepared.warnings,
        },
        wall_time_s=wall_time_s,
        run_name=run_name,
    )
