"""dtype: auto picks bf16 autocast where the hardware multiplies bf16 matrices natively (issue 16):
a CUDA GPU with bf16, or a CPU with AVX512-BF16 / AMX; float32 elsewhere; explicit values stay."""

from __future__ import annotations

import pytest
import torch

from alloylm.train import _trl


@pytest.mark.parametrize(
    ("cuda", "cuda_bf16", "cpu_bf16", "expected"),
    [
        (False, False, True, "bfloat16"),
        (False, False, False, "float32"),
        (True, True, False, "bfloat16"),
        (True, False, True, "float32"),  # the GPU does the work: its bf16 support decides
    ],
)
def test_auto_follows_the_hardware(monkeypatch, cuda, cuda_bf16, cpu_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    monkeypatch.setattr(_trl, "cpu_has_bf16_matmul", lambda: cpu_bf16)
    assert _trl.resolve_dtype("auto") == expected
    assert _trl.precision_flags("auto")["bf16"] is (expected == "bfloat16")
    assert _trl.resolve_dtype("float32") == "float32"


def test_cpu_probe_reads_torch_cpu_capabilities(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert _trl.cpu_has_bf16_matmul() is True
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert _trl.cpu_has_bf16_matmul() is False
