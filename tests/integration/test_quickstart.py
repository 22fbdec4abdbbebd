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


STAGES = ("data", "cpt", "sft", "dpo", "merged", "eval")
MODELS = ("embedded:smollm2-135m-instruct",)


def alloy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alloylm.cli.main", *args], capture_output=True, text=True, cwd=REPO
    )


def stage_statuses(run_output: str) -> dict[str, str]:
    """{stage: status} from the run's summary table (one line per stage: output is not a tty)."""
    statuses = {}
    for line in run_output.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 6 and cells[0] in STAGES:
            statuses[cells[0]] = cells[2]
    return statuses


def check_eval_results(folder: Path) -> None:
    """The eval stage's results: every (model, task, protocol), with sane numbers."""
    records = json.loads((folder / "results.json").read_text())["results"]
    by_key = {(r["model"], r["task"], r["protocol"]): r for r in records}
    assert len(by_key) == len(records) == 2 * 3  # 2 models x (cloze, paper, perplexity)
    models = {model for model, _, _ in by_key}
    assert len(models) == 2 and MODELS[0] in models
    assert Path(next(m for m in models if m != MODELS[0])).name == "merged"
    for (_, task, protocol), record in by_key.items():
        low, high = record["ci95"]
        assert low <= record["score"] <= high
        if protocol == "perplexity":
            assert task == "ap2e_heldout_text"
            # a trained 135M model on textbook prose: far below a random model's ~vocabulary size
            assert 1.0 < record["score"] < 1000.0
            continue
        assert task == "ap2e_review" and protocol in ("cloze", "paper")
        predictions = record["predictions"]
        assert record["n"] == len(predictions) == 8  # stages.eval.tasks.0.limit=8
        assert record["correct"] == sum(p["correct"] for p in predictions)
        assert record["score"] == pytest.approx(record["correct"] / 8)
        assert record["unparseable"] == sum(not p["parsed"] for p in predictions)
        if protocol == "paper":
            assert all(isinstance(p["response"], str) for p in predictions)
    assert (folder / "results.txt").read_text().strip()


@pytest.mark.slow
def test_tiny_quickstart_end_to_end(tmp_path, embedded_model):
    output = tmp_path / "qs"
    overrides = [f"run.output={output}", *TINY]
    first = alloy("run", str(RECIPE), *overrides)
    assert first.returncode == 0, first.stdout + first.stderr
    assert stage_statuses(first.stdout + first.stderr) == dict.fromkeys(STAGES, "built")
    for stage in STAGES:
        manifest = json.loads((output / stage / "alloy.json").read_text())
        assert manifest["stage"] == stage
    check_eval_results(output / "eval")
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
    assert stage_statuses(second.stdout + second.stderr) == dict.fromkeys(STAGES, "skipped")
    # lineage of the merge goes back to the embedded source model
    lineage = alloy("lineage", str(output / "merged"), "--json")
    assert lineage.returncode == 0, lineage.stderr
    text = lineage.stdout
    assert '"stage": "dpo"' in text and '"stage": "sft"' in text and '"stage": "cpt"' in text
    assert "embedded:smollm2-135m-instruct" in text
