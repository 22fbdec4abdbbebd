"""lm-eval stays optional: a clear error without it; its samples convert to alloylm predictions."""

from __future__ import annotations

import importlib.util

import pytest

from alloylm.errors import AlloyError
from alloylm.evals.lm_eval_adapter import _prediction, import_lm_eval


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is not None, reason="lm-eval is installed")
def test_missing_lm_eval_names_the_install_command():
    with pytest.raises(AlloyError, match="lm-evaluation-harness") as error:
        import_lm_eval()
    assert "pip install" in str(error.value)


def test_loglikelihood_sample_to_prediction():
    sample = {
        "doc_id": 7,
        "target": 2,
        "acc": 1.0,
        "filtered_resps": [(-3.0, False), (-2.5, False), (-0.5, True), (-4.0, False)],
    }
    assert _prediction(sample, "acc") == {
        "id": "7",
        "category": None,
        "gold": "C",
        "pred": "C",
        "parsed": True,
        "correct": True,
    }


def test_runs_on_the_cpu_when_there_is_no_gpu(monkeypatch, tmp_path):
    """lm-eval's hf model defaults to CUDA: without a GPU the adapter must ask for the CPU."""
    import sys
    import types

    import torch

    from alloylm.evals import lm_eval_adapter
    from alloylm.evals.runner import EvalSettings

    calls = {}
    sample = {"doc_id": 0, "target": 1, "acc": 1.0, "filtered_resps": [(-2.0, False), (-1.0, True)]}

    def simple_evaluate(**kwargs):
        calls.update(kwargs)
        return {"samples": {"task": [sample]}, "results": {"task": {"acc,none": 1.0}}}

    fake = types.SimpleNamespace(simple_evaluate=simple_evaluate, __version__="0")
    tasks = types.ModuleType("lm_eval.tasks")
    tasks.TaskManager = lambda include_path=None: ("manager", include_path)
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", tasks)
    monkeypatch.setattr(lm_eval_adapter, "import_lm_eval", lambda: fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    record = lm_eval_adapter.run_lm_eval_task(
        tmp_path, "task", EvalSettings(resamples=10), include_path="my_tasks"
    )
    assert calls["device"] == "cpu"
    assert calls["task_manager"] == ("manager", "my_tasks")
    assert record["score"] == 1.0 and record["predictions"][0]["pred"] == "B"
