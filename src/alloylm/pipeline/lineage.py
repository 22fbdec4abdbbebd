"""Lineage: the `alloy.json` manifest and model card of every artifact, and reading them back."""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from alloylm import __version__
from alloylm.atomic import atomic_write_json, atomic_write_text

MANIFEST = "alloy.json"
TRACKED_LIBRARIES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "safetensors",
)


def library_versions() -> dict[str, str]:
    versions = {"alloylm": __version__, "python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_manifest(
    folder: str | Path,
    *,
    stage: str,
    kind: str,
    produces: str,
    config: dict[str, Any],
    parents: list[dict[str, Any]],
    content_hash: str,
    seed: int | None = None,
    metrics: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    data_hashes: dict[str, str] | None = None,
    outputs: dict[str, str] | None = None,
    wall_time_s: float | None = None,
    run_name: str | None = None,
) -> dict[str, Any]:
    """Write `alloy.json` and, for model artifacts, a model card (README.md) into `folder`.

    `parents` entries are {"role": "model"|"base_model"|..., "source": str, "hash": str|None,
    "path": str|None}: the models and artifacts this one was built from.
    """
    folder = Path(folder)
    manifest = {
        "alloylm_manifest": 1,
        "stage": stage,
        "kind": kind,
        "produces": produces,
        "run": run_name,
        "content_hash": content_hash,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_time_s": None if wall_time_s is None else round(wall_time_s, 2),
        "seed": seed,
        "config": config,
        "parents": parents,
        "data_hashes": data_hashes or {},
        "outputs": outputs or {},
        "metrics": metrics or {},
        "details": details or {},
        "versions": library_versions(),
    }
    atomic_write_json(folder / MANIFEST, manifest)
    if produces == "model":
        atomic_write_text(folder / "README.md", model_card(manifest))
    return manifest


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())


def model_card(manifest: dict[str, Any]) -> str:
    lines = [
        "---",
        "library_name: transformers",
        "tags: [alloylm, " + manifest["kind"] + "]",
        "---",
        f"# {manifest.get('run') or 'alloylm'} / {manifest['stage']}",
        "",
        f"Built by alloylm {manifest['versions'].get('alloylm')} with stage kind `{manifest['kind']}`"
        f" on {manifest['created']} (content hash `{manifest['content_hash'][:12]}`).",
        "",
        "## Parents",
        "",
    ]
    for parent in manifest["parents"]:
        lines.append(f"- {parent.get('role', 'input')}: `{parent.get('source')}`")
    if manifest["metrics"]:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [
            f"| {k} | {v} |"
            for k, v in manifest["metrics"].items()
            if not isinstance(v, (dict, list))
        ]
    lines += [
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(manifest["config"], indent=2, default=str),
        "```",
        "",
    ]
    lines += ["Lineage: `alloy lineage <this folder>`.", ""]
    return "\n".join(lines)


def lineage_tree(folder: str | Path, _seen: set[str] | None = None) -> dict[str, Any] | None:
    """The artifact's manifest with its parents' manifests nested under "parents", recursively."""
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    seen = _seen if _seen is not None else set()
    node = {k: manifest.get(k) for k in ("stage", "kind", "created", "content_hash", "metrics")}
    node["path"] = str(Path(folder).resolve())
    node["parents"] = []
    for parent in manifest.get("parents", []):
        path = parent.get("path")
        child = None
        if path and path in seen:
            # A diamond (e.g. a data stage feeding two stages): show it once, refer to it after.
            child = {
                "role": parent.get("role"),
                "source": parent.get("source"),
                "stage_ref": parent.get("stage"),
                "parents": [],
            }
        elif path:
            seen.add(path)
            child = lineage_tree(path, seen)
        if child is None:
            child = {"role": parent.get("role"), "source": parent.get("source"), "parents": []}
        else:
            child["role"] = parent.get("role")
        node["parents"].append(child)
    return node
