"""Two "nodes" on one machine: two `alloy run` processes with --nnodes 2 (torchrun's static
rendezvous on loopback) and one shared output folder. Node 0 owns the pipeline; node 1 only
starts its rank of node 0's training launch (issue 28, defect 6: each node ran its own pipeline,
both wrote the same spec, swapped in their own temporary folders, and ran merge and eval twice)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alloylm.pipeline.launch import rank_markers

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(600)
def test_two_nodes_on_loopback_share_one_pipeline(tmp_path: Path) -> None:
    (tmp_path / "chat.jsonl").write_text("".join(
        json.dumps({"question": f"What is {t}?", "answer": f"{t} is a tissue."}) + "\n"
        for t in ("bone", "skin", "nerve", "muscle", "blood", "fat", "tendon", "cartilage")
    ))  # fmt: skip
    train = {"max_steps": 2, "max_seq_length": 48, "per_device_batch_size": 2, "dtype": "float32",
             "learning_rate": 1e-3, "save_steps": 100}  # fmt: skip
    recipe = {"run": {"name": "nodes", "output": "out", "seed": 0},
              "stages": {"tuned": {"kind": "sft", "model": "tiny:llama",
                                   "data": [{"path": "chat.jsonl"}], "train": train}}}  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(recipe))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    port = str(free_port())

    def node(rank: int) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "alloylm.cli.main", "run", "p.yaml", "--launcher", "torchrun",
             "--num-processes", "1", "--nnodes", "2", "--node-rank", str(rank),
             "--master-addr", "127.0.0.1", "--master-port", port],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    follower = node(1)  # started first: it waits for node 0's session
    leader = node(0)
    leader_out, _ = leader.communicate(timeout=500)
    follower_out, _ = follower.communicate(timeout=120)
    assert leader.returncode == 0, leader_out[-3000:]
    assert follower.returncode == 0, follower_out[-3000:]

    assert "joined 1 launch(es)" in follower_out
    assert "build" not in follower_out.replace("alloylm", "")  # node 1 ran no stage
    markers = rank_markers(tmp_path / "out" / ".alloy" / "state" / "tuned")
    assert [m["rank"] for m in markers] == [0, 1]
    assert all(m["world_size"] == 2 and m["steps"] == 2 for m in markers)
    # one DDP group over both nodes (fp32 on CPU: accelerate needs use_cpu to make it one; without,
    # each rank trained alone and both wrote the artifact)
    assert all(m["distributed_type"] == "MULTI_CPU" for m in markers)
    artifact = tmp_path / "out" / "tuned"
    manifest = json.loads((artifact / "alloy.json").read_text())
    assert manifest["metrics"]["steps"] == 2 and (artifact / "model.safetensors").is_file()
    # one pipeline: no leftover temporary folder of a second runner beside the artifact
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".alloy", "tuned"]
