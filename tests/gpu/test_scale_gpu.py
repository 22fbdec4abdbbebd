"""Sharded training on CUDA: FSDP2 (refused on CPU, so checked only here), ZeRO-3, and QLoRA
under FSDP2. Each is a real `alloy run` on tiny:llama; the rank markers say which engine the
Trainer actually ran (`distributed_type`), so an FSDP request silently trained as DDP fails.

Run by tests/gpu/run_gpu_check.sh (`pytest -m gpu tests/gpu`); skipped without CUDA.
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

TRAIN = {"max_steps": 4, "max_seq_length": 64, "per_device_batch_size": 2, "learning_rate": 1e-3,
         "lr_scheduler": "constant", "warmup_ratio": 0.0, "save_steps": 2, "dtype": "bfloat16"}  # fmt: skip


def _chat_file(folder: Path) -> Path:
    path = folder / "chat.jsonl"
    terms = ("bone", "skin", "nerve", "muscle", "cartilage", "tendon", "blood", "fat")
    path.write_text("".join(
        json.dumps({"question": f"What is {t}?", "answer": f"{t} is a tissue."}) + "\n" for t in terms
    ))  # fmt: skip
    return path


def _run(folder: Path, stage: dict, *launch: str) -> tuple[dict, list[dict]]:
    pipeline = {"run": {"name": "gpu", "output": "out"}, "stages": {"s": stage}}
    (folder / "p.yaml").write_text(yaml.safe_dump(pipeline))
    done = subprocess.run([sys.executable, "-m", "alloylm.cli.main", "run", "p.yaml", *launch],
                          cwd=folder, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    from alloylm.pipeline.launch import rank_markers

    manifest = json.loads((folder / "out" / "s" / "alloy.json").read_text())
    return manifest, rank_markers(folder / "out" / ".alloy" / "state" / "s")


def _assert_plain_artifact(folder: Path) -> None:
    from transformers import AutoModelForCausalLM

    artifact = folder / "out" / "s"
    assert (artifact / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(artifact)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.timeout(900)
def test_sft_under_fsdp2_on_every_gpu(tmp_path: Path) -> None:
    gpus = torch.cuda.device_count()
    manifest, markers = _run(
        tmp_path,
        {"kind": "sft", "model": "tiny:llama", "data": [{"path": str(_chat_file(tmp_path))}], "train": TRAIN},
        "--launcher", "accelerate", "--num-processes", str(gpus), "--config-file", "fsdp2",
    )  # fmt: skip
    assert len(markers) == gpus and all(m["distributed_type"] == "FSDP" for m in markers)
    assert math.isfinite(manifest["metrics"]["final_loss"])
    _assert_plain_artifact(tmp_path)


@pytest.mark.timeout(900)
def test_lora_sft_under_zero3_on_gpus(tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    gpus = torch.cuda.device_count()
    manifest, markers = _run(
        tmp_path,
        {"kind": "sft", "model": "tiny:llama", "data": [{"path": str(_chat_file(tmp_path))}],
         "train": {**TRAIN, "lora": {"r": 8}}},
        "--launcher", "torchrun", "--num-processes", str(gpus), "--config-file", "deepspeed_zero3",
    )  # fmt: skip
    assert all(m["distributed_type"] == "DEEPSPEED" and m["partitioned_at_load"] for m in markers)
    assert math.isfinite(manifest["metrics"]["final_loss"])
    _assert_plain_artifact(tmp_path)


@pytest.mark.timeout(900)
def test_qlora_under_fsdp2(tmp_path: Path) -> None:
    """Defect 7: 4-bit weights stored as bf16 (`bnb_4bit_quant_storage`), no per-rank device_map,
    so FSDP can shard them; the merged artifact is a plain model."""
    pytest.importorskip("bitsandbytes")
    gpus = torch.cuda.device_count()
    manifest, markers = _run(
        tmp_path,
        {"kind": "sft", "model": "tiny:llama", "data": [{"path": str(_chat_file(tmp_path))}],
         "train": {**TRAIN, "lora": {"r": 8, "quantize": "4bit"}}},
        "--launcher", "accelerate", "--num-processes", str(gpus), "--config-file", "fsdp2",
    )  # fmt: skip
    assert all(m["distributed_type"] == "FSDP" for m in markers)
    assert math.isfinite(manifest["metrics"]["final_loss"])
    _assert_plain_artifact(tmp_path)
