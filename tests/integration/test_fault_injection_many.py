"""kill -9 at seeded random moments inside every stage kind: 48 trials plus killed rebuilds.

Each trial starts a real `alloy run` (tiny:llama, 3 steps, short rows), kills it with SIGKILL a
random delay after the stage's build began (random.Random(f"{kind}-{seed}"): a failure
reproduces), and checks: no half-written artifact, no traceback, temporaries gone after the
rerun, training resumed from its last complete checkpoint (said in the log, recorded in
alloy.json), and the result equal to an uninterrupted run's (loss curve within 1e-4; merge
tensors, eval scores and distill files exactly). The distill teacher is a loopback server that
receives an API key, which no file or log of the run may contain.
"""

from __future__ import annotations

import pytest
from tests import faults

KINDS = ["cpt", "sft", "dpo", "orpo", "simpo", "merge", "eval", "distill"]
SEEDS = range(6)  # 8 kinds x 6 = 48 trials

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def teacher():
    with faults.loopback_teacher(delay_s=0.3) as served:
        yield served


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_llama, tiny_llama_other):
    return faults.write_data(tmp_path_factory.mktemp("fault-data"))


@pytest.fixture(scope="module")
def baselines(tmp_path_factory, data, teacher):
    url, _ = teacher
    cache: dict[str, dict] = {}

    def get(kind: str) -> dict:
        if kind not in cache:
            root = tmp_path_factory.mktemp(f"baseline-{kind}")
            cache[kind] = faults.baseline_outcome(root, kind, url, data)
        return cache[kind]

    return get


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_kill_inside_stage(tmp_path, data, teacher, baselines, kind, seed):
    url, seen_keys = teacher
    baseline = baselines(kind)
    faults.run_trial(tmp_path, kind, seed, baseline, url, data)
    if kind == "distill":
        assert f"Bearer {faults.API_KEY}" in seen_keys  # the key was used, and written nowhere


REBUILDS = {
    "cpt": {"train": faults._train(4, learning_rate=5e-4)},
    "merge": {"parameters": {"t": 0.7}},
    "distill": {"qa_pairs_per_chunk": 2},  # new prompts: no call is in the cache
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", sorted(REBUILDS))
def test_killed_rebuild_keeps_the_previous_artifact(tmp_path, data, teacher, kind):
    url, _ = teacher
    faults.killed_rebuild_keeps_the_good_artifact(tmp_path, kind, REBUILDS[kind], url, data)
