"""The extract task end to end on tiny:llama: evaluate() and `alloy eval --type extract`."""

from __future__ import annotations

import json

from alloylm.cli.main import main
from alloylm.evals.runner import EvalSettings, TaskSpec, evaluate


def test_extract_task_on_tiny_llama(tiny_llama, data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_EVALS_DIR", str(tmp_path / "evals"))
    gold = data_root / "openstax_extract" / "anatomy_physiology_2e_extract.jsonl"
    spec = TaskSpec(name="extract_ap", path=str(gold), type="extract", limit=2)
    (record,) = evaluate(["tiny:llama"], [spec], EvalSettings(resamples=20), log=lambda m: None)
    assert record["protocol"] == "extract" and record["metric"] == "field_f1"
    assert record["n"] == 2 and 0 <= record["valid_json"] <= 1
    assert (
        record["settings"]["max_new_tokens"] == 256 and record["settings"]["decoding"] == "greedy"
    )
    assert set(record["per_field"]) == {"materials", "properties", "methods"}
    first = record["predictions"][0]
    assert first["id"] == "ap2e-extract-01" and isinstance(first["response"], str)
    gold_items = sum(p["fields"][f]["gold"] for p in record["predictions"] for f in p["fields"])
    assert gold_items == 4 + 5 + 0 + 7 + 1 + 0  # the first two passages' gold lists
    # a second run is served from the results cache
    (again,) = evaluate(["tiny:llama"], [spec], EvalSettings(resamples=20), log=lambda m: None)
    assert again["cached"] and again["score"] == record["score"]


def test_cli_eval_extract(tiny_llama, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALLOY_EVALS_DIR", str(tmp_path / "evals"))
    out = tmp_path / "results.json"
    argv = ["eval", "tiny:llama", "--tasks", "openstax_extract/anatomy_physiology_2e_extract",
            "--type", "extract", "--limit", "1", "--resamples", "10", "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    (record,) = json.loads(out.read_text())["results"]
    assert record["task_type"] == "extract" and record["n"] == 1
    assert "extract" in capsys.readouterr().out
