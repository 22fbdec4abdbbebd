"""kill -9 inside a stage (fast tier: two trials; tests/integration has 40+ across stage kinds).

A real `alloy run` subprocess is killed with SIGKILL at a seeded random moment while a stage
builds; afterwards no artifact is half-written, the rerun cleans temporaries and ends where an
uninterrupted run ends, and a killed rebuild leaves the previous artifact in place.
"""

from __future__ import annotations

import pytest
from tests import faults


@pytest.mark.timeout(240)
def test_kill_inside_eval_then_rerun_and_kill_a_rebuild(tmp_path, tiny_llama, tiny_llama_other):
    data = faults.write_data(tmp_path / "data")
    baseline = faults.baseline_outcome(tmp_path / "baseline", "eval", None, data)

    kill = faults.run_trial(tmp_path / "trial", "eval", 0, baseline, None, data)
    assert kill.killed, "eval finished before the kill came"

    # the uninterrupted build is the good artifact a killed rebuild must leave alone
    faults.killed_rebuild_keeps_the_good_artifact(
        tmp_path / "baseline", "eval", {"protocols": ["cloze", "paper"]}, None, data
    )
