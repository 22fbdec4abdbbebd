"""Model cards the Hugging Face Hub understands: the YAML front matter uses only the Hub's
documented card keys, with the values the Hub expects for a fine-tune, a merge and a quantized
(GGUF) export; model-index parses with huggingface_hub; the body keeps the lineage summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from alloylm.lineage import card_metadata, model_card, write_manifest

# The model card metadata keys documented at https://huggingface.co/docs/hub/model-cards
# ("Model card metadata", "Specifying a base model", "Evaluation Results") and in the annotated
# card template (https://huggingface.co/docs/hub/model-card-annotated).
HUB_CARD_KEYS = {
    "language",
    "license",
    "license_name",
    "license_link",
    "library_name",
    "tags",
    "datasets",
    "metrics",
    "base_model",
    "base_model_relation",
    "pipeline_tag",
    "model-index",
    "new_version",
    "inference",
    "widget",
    "thumbnail",
    "co2_eq_emissions",
}
# "The Hub only recognizes four relations" (docs: Specifying a base model)
HUB_RELATIONS = {"adapter", "merge", "quantized", "finetune"}


def front_matter(card: str) -> dict:
    assert card.startswith("---\n"), card[:40]
    return yaml.safe_load(card.split("---\n", 2)[1])


def manifest(kind: str, stage: str, parents: list[dict], **extra) -> dict:
    return {
        "stage": stage,
        "kind": kind,
        "produces": "model",
        "run": "r",
        "content_hash": "ab" * 32,
        "created": "2026-01-01T00:00:00Z",
        "config": extra.pop("config", {"kind": kind}),
        "parents": parents,
        "metrics": {"loss_last": 1.5},
        "data_hashes": extra.pop("data_hashes", {}),
        "versions": {"alloylm": "0.1.0"},
        **extra,
    }


def build(folder: Path, kind: str, parents: list[dict], **extra) -> Path:
    folder.mkdir(parents=True)
    write_manifest(
        folder,
        stage=folder.name,
        kind=kind,
        produces="model",
        config=extra.get("config", {"kind": kind}),
        parents=parents,
        content_hash=(folder.name * 64)[:64],
        run_name="r",
        data_hashes=extra.get("data_hashes"),
    )
    return folder


EMBEDDED = {"role": "model", "source": "embedded:smollm2-135m-instruct", "hash": "x"}


def test_finetune_of_the_embedded_model_names_its_hub_id(tmp_path: Path) -> None:
    sft = build(tmp_path / "out" / "sft", "sft", [EMBEDDED])
    meta = front_matter((sft / "README.md").read_text())
    assert set(meta) <= HUB_CARD_KEYS
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["base_model_relation"] == "finetune"
    assert meta["license"] == "apache-2.0"
    assert "datasets" not in meta  # local training files are no Hub datasets
    assert meta["library_name"] == "transformers"
    assert {"alloylm", "sft"} <= set(meta["tags"])


def test_lineage_is_walked_to_the_hub_roots_and_merges_list_them(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cpt = build(out / "cpt", "cpt", [EMBEDDED])
    sft = build(out / "sft", "sft", [{"role": "model", "source": "x", "path": str(cpt)}])
    other = {"role": "model", "source": "HuggingFaceTB/SmolLM2-360M-Instruct", "hash": "y"}
    merged = build(
        out / "merged",
        "merge",
        [{"role": "base_model", "source": "s", "path": str(sft)}, other],
        config={"method": "slerp", "parameters": {"t": 0.5}},
    )
    meta = front_matter((merged / "README.md").read_text())
    assert set(meta) <= HUB_CARD_KEYS
    assert meta["base_model"] == [
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "HuggingFaceTB/SmolLM2-360M-Instruct",
    ]
    assert meta["base_model_relation"] == "merge" and "merge" in meta["tags"]
    assert "license" not in meta  # the 360M parent's license is not known here: say nothing
    body = (merged / "README.md").read_text()
    assert "## Merge configuration" in body and "method: slerp" in body
    assert "stage `sft`" in body  # the lineage summary names the parent stage and hash
    written = json.loads((merged / "alloy.json").read_text())
    assert written["parents"][0]["path"] == "../sft"


def test_gguf_export_is_quantized_with_library_gguf(tmp_path: Path) -> None:
    sft = build(tmp_path / "out" / "sft", "sft", [EMBEDDED])
    gguf = build(tmp_path / "out" / "gguf", "export", [{"role": "model", "path": str(sft)}])
    meta = front_matter((gguf / "README.md").read_text())
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["base_model_relation"] == "quantized"
    assert meta["library_name"] == "gguf" and "gguf" in meta["tags"]
    assert meta["base_model_relation"] in HUB_RELATIONS


def test_model_index_parses_with_huggingface_hub() -> None:
    from huggingface_hub import ModelCard

    evaluations = [
        {"task": "ap_mcq", "protocol": "paper", "metric": "accuracy", "score": 0.4125, "n": 80},
        {"task": "heldout", "protocol": "loglik", "metric": "perplexity", "score": 12.5, "n": 9},
    ]
    card = model_card(manifest("sft", "sft", [EMBEDDED]), evaluations=evaluations)
    meta = front_matter(card)
    assert set(meta) <= HUB_CARD_KEYS
    parsed = ModelCard(card).data
    assert [(r.dataset_name, r.metric_type, r.metric_value) for r in parsed.eval_results] == [
        ("ap_mcq", "accuracy", 0.4125),
        ("heldout", "perplexity", 12.5),
    ]
    assert parsed.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "| ap_mcq | paper | accuracy | 0.4125 | 80 |" in card


def test_hub_lineage_of_sources_and_artifacts(tmp_path: Path) -> None:
    from alloylm.lineage import hub_lineage

    plain = tmp_path / "plain"
    plain.mkdir()
    hub_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_lineage("embedded:smollm2-135m-instruct", plain) == ([hub_id], "apache-2.0")
    assert hub_lineage("tiny:llama", plain) == ([], None)
    sft = build(tmp_path / "out" / "sft", "sft", [EMBEDDED])
    assert hub_lineage(str(sft), sft) == ([hub_id], "apache-2.0")


def test_tiny_models_have_no_base_model_to_name() -> None:
    meta = card_metadata(manifest("sft", "sft", [{"role": "model", "source": "tiny:llama"}]))
    assert "base_model" not in meta and "base_model_relation" not in meta


@pytest.mark.parametrize("kind,relation", [("cpt", "finetune"), ("orpo", "finetune")])
def test_every_training_kind_is_a_finetune(kind: str, relation: str) -> None:
    assert card_metadata(manifest(kind, kind, [EMBEDDED]))["base_model_relation"] == relation
