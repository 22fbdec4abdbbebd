"""The quickstart recipe end to end on the embedded model, with tiny step counts (minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "quickstart.yaml"

TINY = [
    "stages.cpt.train.max_steps=2",
    "stages.cpt.train.max_seq_length=128",
    "stages.cpt.train.per_device_batch_size=1",
    "stages.sft.train.max_steps=2",
    "stages.sft.train.max_seq_length=128",
    "stages.sft.train.per_device_batch_size=1",
    "stages.dpo.train.max_steps=2",
    "stages.dpo.train.max_seq_length=128",
    "stages.dpo.train.per_device_batch_size=1",
    "stages.eval.tasks.0.limit=8",
    "stages.eval.tasks.1.limit=2",
    "stages.eval.tasks.1.max_length=128",
]


def alloy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alloylm.cli.main", *args], capture_output=True, text=True, cwd=REPO
    )


@pytest.mark.slow
def test_tiny_quickstart_end_to_end(tmp_path, embedded_model):
    output = tmp_path / "qs"
    overrides = [f"run.output={output}", *TINY]
    first = alloy("run", str(RECIPE), *overrides)
    assert first.returncode == 0, first.stdout + first.stderr
    for stage in ("data", "cpt", "sft", "dpo", "merged", "eval"):
        manifest = json.loads((output / stage / "alloy.json").read_text())
        assert manifest["stage"] == stage
    # the held-out split is recorded and its documents are written for perplexity
    cpt = json.loads((output / "cpt" / "alloy.json").read_text())
    assert (output / "cpt" / "heldout.jsonl").stat().st_size > 0
    assert cpt["metrics"]["final_loss"] == cpt["metrics"]["final_loss"]  # not NaN
    # every model artifact loads with plain transformers
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(output / "merged")
    assert merged.config.num_hidden_layers == 30
    # a second run skips every stage
    second = alloy("run", str(RECIPE), *overrides)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("skip") >= 6
    # lineage of the merge goes back to the embedded source model
    lineage = alloy("lineage", str(output / "merged"), "--json")
    assert lineage.returncode == 0, lineage.stderr
    text = lineage.stdout
    assert '"stage": "dpo"' in text and '"stage": "sft"' in text and '"stage": "cpt"' in text
    assert "embedded:smollm2-135m-instruct" in text
