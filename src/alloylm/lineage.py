"""Lineage: the `alloy.json` manifest and model card of every artifact, and reading them back.

Parents are named portably: an alloylm artifact parent by `<stage>@<content hash[:12]>` with a
path relative to the child (`../sft`), never by an unresolved `${stages.sft.output}` or an
absolute path of the machine that built it; the config is rewritten the same way.

The model card (README.md) is the one the Hugging Face Hub reads: YAML front matter with
`base_model` (the Hub models the lineage starts from; a list for merges), `base_model_relation`
(finetune, merge or quantized), `license` where the lineage knows it, `library_name`, `tags`, `pipeline_tag` and, once an eval stage has measured the model,
`model-index`; the body keeps the lineage summary and, for merges, the merge configuration.
Keys: https://huggingface.co/docs/hub/model-cards (tests/unit/test_model_card.py).
"""

from __future__ import annotations

import json
import os
import platform
import re
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
    artifacts = _artifact_parents(parents)
    parents = [_portable_parent(folder, parent, artifacts) for parent in parents]
    config = _portable(config, artifacts, folder)
    details = _portable(details or {}, artifacts, folder)
    data_hashes = _portable(data_hashes or {}, artifacts, folder)
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
        "data_hashes": data_hashes,
        "outputs": outputs or {},
        "metrics": metrics or {},
        "details": details,
        "versions": library_versions(),
    }
    atomic_write_json(folder / MANIFEST, manifest)
    if produces == "model":
        atomic_write_text(folder / "README.md", model_card(manifest, folder=folder))
    elif produces == "eval":
        _add_evaluations_to_cards(manifest, artifacts)
    return manifest


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())


STAGE_PLACEHOLDER = re.compile(r"\$\{stages\.([A-Za-z0-9_\-]+)\.output\}")
# Model sources that are copies of a Hub model: what base_model names for them.
HUB_ID_OF_SOURCE = {"embedded:smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
LICENSE_OF_SOURCE = {"embedded:smollm2-135m-instruct": "apache-2.0"}
UNKNOWN_LICENSE = "?"
RELATION_OF_KIND = {
    "cpt": "finetune",
    "sft": "finetune",
    "dpo": "finetune",
    "orpo": "finetune",
    "simpo": "finetune",
    "merge": "merge",
    "export": "quantized",
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def artifact_name(manifest: dict[str, Any]) -> str:
    """How lineage names an artifact: `<stage>@<first 12 hex of its content hash>`."""
    return f"{manifest.get('stage')}@{str(manifest.get('content_hash'))[:12]}"


def _artifact_parents(parents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{absolute path: manifest} of the parents that are alloylm artifacts."""
    found = {}
    for parent in parents:
        if parent.get("path"):
            path = Path(parent["path"]).resolve()
            manifest = read_manifest(path)
            if manifest and manifest.get("content_hash"):
                found[str(path)] = manifest
    return found


def _portable(value: Any, artifacts: dict[str, dict[str, Any]], folder: Path | None = None) -> Any:
    """`value` without machine-specific locations: an artifact path (or `${stages.x.output}`)
    becomes `<stage>@<hash>`, a file of the data root `${data}/...`, and a file inside the
    project (the folder holding the run's output folder) a path relative to the artifact."""
    if isinstance(value, dict):
        return {
            _portable(k, artifacts, folder): _portable(v, artifacts, folder)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_portable(v, artifacts, folder) for v in value]
    if not isinstance(value, str):
        return value
    by_stage = {m.get("stage"): m for m in artifacts.values()}
    value = STAGE_PLACEHOLDER.sub(
        lambda match: (
            artifact_name(by_stage[match.group(1)])
            if match.group(1) in by_stage
            else match.group(0)
        ),
        value,
    )
    if not value.startswith("/"):
        return value
    for path, manifest in sorted(artifacts.items(), key=lambda item: -len(item[0])):
        if value == path or value.startswith(path + os.sep):
            return artifact_name(manifest) + value[len(path) :]
    return _relative_location(value, folder)


def _relative_location(value: str, folder: Path | None) -> str:
    from alloylm.resources import data_root

    path = Path(value)
    for root, name in ((data_root(), "${data}"),):
        if path.is_relative_to(root):
            return f"{name}/{path.relative_to(root).as_posix()}"
    if folder is not None:
        artifact = folder.resolve()
        project = artifact.parent.parent
        if path.is_relative_to(project):
            return os.path.relpath(path, artifact)
    return value


def _portable_parent(
    folder: Path, parent: dict[str, Any], artifacts: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    parent = dict(parent)
    path = str(Path(parent["path"]).resolve()) if parent.get("path") else None
    manifest = artifacts.get(path) if path else None
    if manifest is not None:
        parent["stage"] = manifest.get("stage")
        parent["hash"] = manifest["content_hash"]
        if manifest.get("run"):
            parent["run"] = manifest["run"]
        parent["source"] = _portable(parent.get("source") or path, artifacts)
        # relative to the artifact's final place: `folder` is a temporary sibling of it
        parent["path"] = os.path.relpath(path, folder.resolve())
    return parent


def _parent_folder(folder: Path | None, parent: dict[str, Any]) -> Path | None:
    path = parent.get("path")
    if not path:
        return None
    path = Path(path)
    if not path.is_absolute():
        if folder is None:
            return None
        path = folder / path
    return path.resolve()


def _model_parents(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        p
        for p in manifest.get("parents", [])
        if not str(p.get("role", "")).startswith(("data", "benchmark", "tasks"))
    ]


def lineage_roots(
    manifest: dict[str, Any], folder: Path | None, _depth: int = 0
) -> tuple[list[str], list[str]]:
    """(Hub model ids, licenses) of the models the artifact's lineage starts from."""
    models: list[str] = []
    licenses: list[str] = []

    def add(target: list[str], items: list[str]) -> None:
        target.extend(item for item in items if item not in target)

    for parent in _model_parents(manifest):
        parent_folder = _parent_folder(folder, parent)
        parent_manifest = read_manifest(parent_folder) if parent_folder else None
        if parent_manifest is not None and _depth < 32:
            more = lineage_roots(parent_manifest, parent_folder, _depth + 1)
            add(models, more[0])
            add(licenses, more[1])
            continue
        source = str(parent.get("source") or "")
        if source in HUB_ID_OF_SOURCE:
            add(models, [HUB_ID_OF_SOURCE[source]])
        elif HUB_ID.match(source) and not Path(source).exists():
            add(models, [source])
        add(licenses, [LICENSE_OF_SOURCE.get(source, UNKNOWN_LICENSE)])
    return models, licenses


def hub_lineage(source: str, folder: str | Path) -> tuple[list[str], str | None]:
    """(Hub base models, license or None) of the model source `source`, resolved to `folder`."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is not None:
        models, licenses = lineage_roots(manifest, folder)
    else:
        models, licenses = lineage_roots({"parents": [{"role": "model", "source": source}]}, None)
    known = len(licenses) == 1 and licenses[0] != UNKNOWN_LICENSE
    return models, licenses[0] if known else None


def card_metadata(
    manifest: dict[str, Any],
    folder: Path | None = None,
    evaluations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The card's YAML front matter (Hub keys only)."""
    kind = manifest["kind"]
    # `datasets` is left out: it must name Hub datasets, and the data alloylm trains on are
    # local files (the packaged OpenStax data is not on the Hub under one id).
    base, licenses = lineage_roots(manifest, folder)
    meta: dict[str, Any] = {}
    if base:
        meta["base_model"] = base if kind == "merge" or len(base) > 1 else base[0]
        if kind in RELATION_OF_KIND:
            meta["base_model_relation"] = RELATION_OF_KIND[kind]
    if len(licenses) == 1 and licenses[0] != UNKNOWN_LICENSE:  # every root's, and one
        meta["license"] = licenses[0]
    meta["library_name"] = "gguf" if kind == "export" else "transformers"
    tags = ["alloylm", kind]
    if kind == "merge":
        tags += ["merge", str((manifest.get("config") or {}).get("method") or "merge")]
    if kind == "export":
        tags.append("gguf")
    meta["tags"] = list(dict.fromkeys(tags))
    meta["pipeline_tag"] = "text-generation"
    if evaluations:
        meta["model-index"] = model_index(manifest, evaluations)
    return meta


def model_index(manifest: dict[str, Any], evaluations: list[dict[str, Any]]) -> list[dict]:
    """Eval records (alloylm.evals results) in the Hub's model-index format."""
    results = []
    for record in evaluations:
        score = record.get("score")
        if not isinstance(score, (int, float)):
            continue
        metric = str(record.get("metric") or "accuracy")
        entry: dict[str, Any] = {
            "task": {"type": "text-generation", "name": "Text Generation"},
            "dataset": {"name": str(record["task"]), "type": str(record["task"])},
            "metrics": [
                {
                    "type": metric,
                    "value": round(float(score), 6),
                    "name": f"{metric} ({record.get('protocol')} protocol)",
                }
            ],
        }
        if record.get("n") is not None:
            entry["dataset"]["args"] = {"n": int(record["n"])}
        results.append(entry)
    name = f"{manifest.get('run') or 'alloylm'}-{manifest.get('stage')}".replace("/", "-")
    return [{"name": name, "results": results}]


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _front_matter(meta: dict[str, Any]) -> str:
    import yaml

    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def model_card(
    manifest: dict[str, Any],
    *,
    folder: str | Path | None = None,
    evaluations: list[dict[str, Any]] | None = None,
) -> str:
    folder = Path(folder) if folder is not None else None
    meta = card_metadata(manifest, folder, evaluations)
    lines = [
        _front_matter(meta),
        f"# {manifest.get('run') or 'alloylm'} / {manifest['stage']}",
        "",
        f"Built by alloylm {manifest['versions'].get('alloylm')} with stage kind `{manifest['kind']}`"
        f" on {manifest['created']} (`{artifact_name(manifest)}`).",
        "",
        "## Parents",
        "",
    ]
    for parent in manifest["parents"]:
        role = parent.get("role", "input")
        if parent.get("stage"):
            lines.append(
                f"- {role}: stage `{parent['stage']}`, content hash `{str(parent.get('hash'))[:12]}`"
                f" (`{parent.get('source')}`)"
            )
        else:
            lines.append(f"- {role}: `{parent.get('source')}`")
    if manifest["metrics"]:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [
            f"| {k} | {v} |"
            for k, v in manifest["metrics"].items()
            if not isinstance(v, (dict, list))
        ]
    if evaluations:
        lines += ["", "## Evaluation", "", "| task | protocol | metric | score | n |"]
        lines += ["|---|---|---|---|---|"]
        lines += [
            f"| {r.get('task')} | {r.get('protocol')} | {r.get('metric')} | {r.get('score')} "
            f"| {r.get('n')} |"
            for r in evaluations
        ]
    if manifest["kind"] == "merge":
        import yaml

        lines += [
            "",
            "## Merge configuration",
            "",
            "```yaml",
            yaml.safe_dump(_without_none(manifest["config"]), sort_keys=False).rstrip(),
            "```",
        ]
        lines += _slice_lines(manifest["config"].get("slices"))
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


def _slice_lines(slices: list[dict[str, Any]] | None) -> list[str]:
    """A merge built from layer slices: which model layers make each output layer."""
    if not slices:
        return []
    lines = ["", "## Layers", "", "| output layers | from |", "|---|---|"]
    out = 0
    for slice_ in slices:
        sources = slice_.get("sources") or []
        start, end = sources[0]["layer_range"]
        takes = "; ".join(
            f"`{s['model']}` layers {s['layer_range'][0]}-{s['layer_range'][1] - 1}"
            for s in sources
        )
        lines.append(f"| {out}-{out + end - start - 1} | {takes} |")
        out += end - start
    lines.append(f"\n{out} layers in all.")
    return lines


def _add_evaluations_to_cards(
    eval_manifest: dict[str, Any], artifacts: dict[str, dict[str, Any]]
) -> None:
    """Rewrite the card of every alloylm model this eval measured (sweep variants included,
    `merged@<hash>/<variant>`), adding its results as model-index."""
    results = (eval_manifest.get("details") or {}).get("results") or []
    names = {artifact_name(manifest): Path(path) for path, manifest in artifacts.items()}
    by_folder: dict[Path, list[dict[str, Any]]] = {}
    for record in results:
        model = str(record.get("model"))
        head, _, rest = model.partition("/")
        if head in names:
            folder = names[head] / rest if rest else names[head]
            record = {**record, "eval_stage": eval_manifest.get("stage")}
            by_folder.setdefault(folder, []).append(record)
    for folder, records in by_folder.items():
        manifest = read_manifest(folder)
        if manifest and manifest.get("produces") == "model":
            card = model_card(manifest, folder=folder, evaluations=records)
            atomic_write_text(folder / "README.md", card)


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
        resolved = _parent_folder(Path(folder), parent)
        path = str(resolved) if resolved is not None else None
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
