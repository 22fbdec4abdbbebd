"""`alloy run --parallel 2` on a machine with at least two GPUs: two independent training stages
run at the same time, each on its own GPU (CUDA_VISIBLE_DEVICES), and both artifacts are built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 GPUs"
    ),
]

TRAIN = {"max_steps": 4, "max_seq_length": 64, "per_device_batch_size": 2, "dtype": "bfloat16"}


@pytest.mark.timeout(900)
def test_two_branches_train_at_once_on_disjoint_gpus(tmp_path: Path) -> None:
    from alloylm.pipeline.load import load_pipeline
    from alloylm.pipeline.parallel import device_groups, run_parallel, slot_environments

    (tmp_path / "chat.jsonl").write_text(
        "".join(
            json.dumps({"question": f"What is {t}?", "answer": f"{t} is a tissue."}) + "\n"
            for t in ("bone", "skin", "nerve", "muscle")
        )
    )
    stages = {
        name: {"kind": "sft", "model": "tiny:llama", "data": [{"path": "chat.jsonl"}],
               "train": {**TRAIN, "learning_rate": lr}}
        for name, lr in (("a", 1e-3), ("b", 2e-3))
    }  # fmt: skip
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"run": {"name": "gpu-par", "output": "out"}, "stages": stages}))
    pipeline = load_pipeline(path)
    events = []
    groups = device_groups(2, [str(i) for i in range(torch.cuda.device_count())], per_group=1)
    outcomes = run_parallel(
        pipeline,
        [str(path)],
        slot_environments(groups),
        on_event=lambda event, outcome: events.append((event, outcome.name, dict(outcome.metrics))),
    )
    assert {o.name: o.status for o in outcomes} == {"a": "built", "b": "built"}
    started = {
        name: metrics["CUDA_VISIBLE_DEVICES"] for event, name, metrics in events if event == "start"
    }
    assert started["a"] != started["b"]  # disjoint GPUs
    times = {o.name: o.metrics for o in outcomes}
    assert max(times["a"]["started"], times["b"]["started"]) < min(
        times["a"]["ended"], times["b"]["ended"]
    )
    for name in ("a", "b"):
        manifest = json.loads((tmp_path / "out" / name / "alloy.json").read_text())
        assert manifest["metrics"]["steps"] == 4
