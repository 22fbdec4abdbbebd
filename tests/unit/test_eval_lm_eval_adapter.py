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
