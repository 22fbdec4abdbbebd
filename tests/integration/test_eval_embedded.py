"""The embedded 135M model: loglik (plain, lm-eval's prompt), cloze and paper on real questions."""

from __future__ import annotations

import pytest

from alloylm.evals.runner import EvalSettings, TaskSpec, evaluate

pytestmark = pytest.mark.slow
MODEL = "embedded:smollm2-135m-instruct"


def test_embedded_model_protocols(embedded_model, data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_EVALS_DIR", str(tmp_path / "cache"))
    tasks = [
        TaskSpec(
            name="bio",
            path=str(data_root / "mmlu_stem/college_biology_test.csv"),
            limit=8,
            protocols=("loglik",),
        ),
        TaskSpec(
            name="ap",
            path=str(data_root / "openstax_mcq/anatomy_physiology_2e_mcq.jsonl"),
            limit=8,
            protocols=("cloze", "paper"),
        ),
    ]
    plain = evaluate(
        [MODEL], tasks[:1], EvalSettings(template="plain", batch_size=8, resamples=100), log=print
    )
    one_by_one = evaluate(
        [MODEL],
        tasks[:1],
        EvalSettings(template="plain", batch_size=1, resamples=100, cache=False),
        log=print,
    )
    # batching and the shared description prefix do not change any answer
    assert [p["pred"] for p in plain[0]["predictions"]] == [
        p["pred"] for p in one_by_one[0]["predictions"]
    ]
    assert plain[0]["prompt"]["subject"] == "college biology"

    records = evaluate(
        [MODEL], tasks[1:], EvalSettings(batch_size=8, resamples=100, max_new_tokens=4), log=print
    )
    by_protocol = {r["protocol"]: r for r in records}
    assert by_protocol["cloze"]["n"] == 8
    paper = by_protocol["paper"]
    # the instruct model answers with a letter most of the time under the study's prompt
    assert paper["answered"] >= 4, [p["response"] for p in paper["predictions"]]
    assert all(0.0 <= r["score"] <= 1.0 for r in records)
