"""`lm_eval:<task>` end to end: lm-evaluation-harness scores a local MMLU file with its own code,
and alloylm's `loglik` protocol (template plain: the same prompt) picks the same answers.

Needs lm-eval (optional: `pip install 'alloylm[lm-eval]'`; .ci/side-venvs.sh installs it); skipped
without it, except where ALLOY_REQUIRE_EQUIVALENCE=1 (CI sets it): there a missing lm-eval fails.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os

import pytest

if importlib.util.find_spec("lm_eval") is None:
    if os.environ.get("ALLOY_REQUIRE_EQUIVALENCE") == "1":
        raise ImportError(
            "lm-eval is required here (ALLOY_REQUIRE_EQUIVALENCE=1): run .ci/side-venvs.sh"
        )
    pytest.skip("lm-eval not installed: pip install 'alloylm[lm-eval]'", allow_module_level=True)

from alloylm.evals.lm_eval_adapter import mcq_task_yaml  # noqa: E402
from alloylm.evals.runner import EvalSettings, TaskSpec, evaluate  # noqa: E402

pytestmark = pytest.mark.slow
QUESTIONS = 12


def test_lm_eval_task_matches_alloylm_loglik(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_EVALS_DIR", str(tmp_path / "cache"))
    source = data_root / "mmlu_stem" / "college_biology_test.csv"
    with open(source, newline="", encoding="utf-8") as handle:
        rows = [row for _, row in zip(range(QUESTIONS), csv.reader(handle), strict=False)]
    data = tmp_path / "college_biology.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": r[0], "choices": r[1:5], "answer": "ABCD".index(r[5])}) + "\n"
            for r in rows
        )
    )
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "alloy_college_biology.yaml").write_text(
        mcq_task_yaml("alloy_college_biology", data, subject="college biology")
    )
    settings = EvalSettings(protocols=("loglik",), template="plain", batch_size=4)
    records = evaluate(
        ["embedded:smollm2-135m-instruct"],
        [
            TaskSpec(name="lm_eval:alloy_college_biology", include_path=str(tasks)),
            TaskSpec(name="college_biology", path=str(source), limit=QUESTIONS),
        ],
        settings,
        log=lambda _: None,
    )
    by_protocol = {record["protocol"]: record for record in records}
    harness, ours = by_protocol["lm_eval"], by_protocol["loglik"]
    assert harness["n"] == ours["n"] == QUESTIONS
    assert harness["lm_eval"]["metric"] == "acc"
    assert [p["gold"] for p in harness["predictions"]] == [p["gold"] for p in ours["predictions"]]
    assert [p["pred"] for p in harness["predictions"]] == [p["pred"] for p in ours["predictions"]]
    assert harness["score"] == pytest.approx(harness["lm_eval"]["reported"]["acc,none"])
