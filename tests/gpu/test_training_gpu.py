"""CUDA paths of the training stages: bf16, real 4-bit QLoRA, and a 2-GPU accelerate launch.

Each runs a real `alloy run` on `tiny:llama` and reads the artifact's alloy.json. Skipped
without CUDA (and QLoRA without bitsandbytes, the launch without two GPUs); run them whenever a
GPU machine is lent: `pytest -m gpu tests/gpu`.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

TRAIN = {
    "max_steps": 8,
    "max_seq_length": 64,
    "per_device_batch_size": 2,
    "learning_rate": 1e-2,
    "lr_scheduler": "constant",
    "warmup_ratio": 0.0,
    "save_steps": 4,
}


def _chat_file(folder: Path) -> Path:
    path = folder / "chat.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question": f"What is {t}?", "answer": f"{t} is a tissue of the body."})
            + "\n"
            for t in ("bone", "skin", "nerve", "muscle", "cartilage", "tendon", "blood", "fat")
        )
    )
    return path


def _text_file(folder: Path) -> Path:
    path = folder / "corpus.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {"text": f"Section {i}. Bone is a connective tissue with a mineral matrix. "}
            )
            + "\n"
            for i in range(32)
        )
    )
    return path


def _run(folder: Path, stage: dict, *extra: str) -> dict:
    pipeline = {"run": {"name": "gpu", "output": "out"}, "stages": {"s": stage}}
    (folder / "p.yaml").write_text(yaml.safe_dump(pipeline))
    done = subprocess.run(
        [sys.executable, "-m", "alloylm.cli.main", "run", "p.yaml", *extra],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((folder / "out" / "s" / "alloy.json").read_text())


def _assert_trained(manifest: dict) -> None:
    metrics = manifest["metrics"]
    assert math.isfinite(metrics["final_loss"])
    history = [loss for _, loss in metrics.get("loss_history", [])]  # [[step, loss], ...]
    if len(history) >= 2:
        assert history[-1] < history[0]


@pytest.mark.timeout(1200)
def test_cpt_in_bf16_on_cuda(tmp_path: Path) -> None:
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    corpus = _text_file(tmp_path)
    manifest = _run(
        tmp_path,
        {"kind": "cpt", "model": "tiny:llama", "data": [{"path": str(corpus)}],
         "train": {**TRAIN, "dtype": "bfloat16"}},
    )  # fmt: skip
    _assert_trained(manifest)


@pytest.mark.timeout(1200)
def test_sft_with_real_4bit_qlora(tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    chats = _chat_file(tmp_path)
    manifest = _run(
        tmp_path,
        {"kind": "sft", "model": "tiny:llama", "data": [{"path": str(chats)}],
         "train": {**TRAIN, "lora": {"r": 8, "quantize": "4bit"}}},
    )  # fmt: skip
    _assert_trained(manifest)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "s")  # a plain merged model
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.timeout(1200)
def test_cpt_on_two_gpus_through_accelerate(tmp_path: Path) -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    pytest.importorskip("accelerate")
    corpus = _text_file(tmp_path)
    manifest = _run(
        tmp_path,
        {"kind": "cpt", "model": "tiny:llama", "data": [{"path": str(corpus)}], "train": TRAIN},
        "--launcher",
        "accelerate",
        "--num-processes",
        "2",
    )
    _assert_trained(manifest)
