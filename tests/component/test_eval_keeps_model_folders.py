"""`alloy eval` leaves model folders as they are, so their identity (content hash of the stages that
read them, DPO's reference cache) does not change: the next `alloy run` skips what it built."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from alloylm.cli.main import main
from alloylm.models.sources import resolve_model
from alloylm.pipeline.load import load_pipeline
from alloylm.pipeline.runner import PipelineRunner


@pytest.fixture(autouse=True)
def caches(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_EVALS_DIR", str(tmp_path / "eval-cache"))


def listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def statuses(pipeline_file: Path) -> list[str]:
    return [o.status for o in PipelineRunner(load_pipeline(pipeline_file)).run()]


def test_alloy_eval_then_alloy_run_skips_the_dependants(data_root, tmp_path, monkeypatch):
    project = tmp_path / "project"
    base = project / "models" / "base"
    shutil.copytree(resolve_model("tiny:llama"), base)  # the user's own model folder
    pipeline_file = project / "p.yaml"
    pipeline_file.write_text(
        textwrap.dedent(
            f"""\
            run: {{name: t, output: out}}
            stages:
              merged: {{kind: merge, method: linear, parameters: {{weight: 0.5}}, models: ["{base}", "tiny:llama:1"]}}
              again: {{kind: merge, method: linear, parameters: {{weight: 0.5}}, models: ["${{stages.merged.output}}", "tiny:llama:1"]}}
            """
        )
    )
    assert statuses(pipeline_file) == ["built", "built"]
    merged = project / "out" / "merged"
    before = {folder: listing(folder) for folder in (base, merged)}
    bench = tmp_path / "ap.jsonl"
    lines = (data_root / "openstax_mcq/anatomy_physiology_2e_mcq.jsonl").read_text().splitlines()
    bench.write_text("\n".join(lines[:3]) + "\n")
    monkeypatch.chdir(tmp_path)
    command = ["eval", str(base), str(merged), "--tasks", str(bench), "--protocol", "loglik"]
    assert main([*command, "--resamples", "10"]) == 0
    assert {folder: listing(folder) for folder in (base, merged)} == before
    (written,) = (tmp_path / "alloy-evals").glob("*.json")  # the results went here instead
    assert len(json.loads(written.read_text())["results"]) == 2
    assert statuses(pipeline_file) == ["skipped", "skipped"]


def test_dpo_reference_cache_key_ignores_files_beside_the_model(tmp_path):
    from alloylm.stages.dpo import ref_cache_key

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    rows = [{"prompt": "p", "chosen": "c", "rejected": "r"}]
    key = ref_cache_key(str(model), rows, 64)
    (model / "evals").mkdir()  # results an older alloylm (or a user) wrote into the folder
    (model / "evals" / "task__paper.json").write_text("{}")
    (model / "README.md").write_text("a model card")
    assert ref_cache_key(str(model), rows, 64) == key
    (model / "model.safetensors").write_bytes(b"other weights")
    assert ref_cache_key(str(model), rows, 64) != key
