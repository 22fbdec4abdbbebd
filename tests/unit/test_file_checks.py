"""Header checks of safetensors and GGUF files, on hand-built bytes."""

from __future__ import annotations

import json
import struct

import pytest

from alloylm.errors import ModelSourceError
from alloylm.models.file_checks import check_gguf, check_safetensors


def safetensors(path, header: dict, data: bytes):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_a_real_safetensors_file_passes(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file(
        {"a": torch.zeros(3, 2), "b": torch.ones(4, dtype=torch.bfloat16)},
        tmp_path / "m.safetensors",
    )
    header = check_safetensors(tmp_path / "m.safetensors")
    assert header["a"]["shape"] == [3, 2] and header["b"]["dtype"] == "BF16"


def test_overlapping_tensors_are_refused(tmp_path):
    entry = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    path = safetensors(
        tmp_path / "m.safetensors",
        {"a": entry, "b": {**entry, "data_offsets": [4, 12]}},
        b"\0" * 12,
    )
    with pytest.raises(ModelSourceError, match="overlap"):
        check_safetensors(path)


def gguf(version=3, tensors=0, entries=b"", count=0, infos=b"", data=b""):
    return b"GGUF" + struct.pack("<IQQ", version, tensors, count) + entries + infos + data


def kv_string(key: bytes, value: bytes) -> bytes:
    return (
        struct.pack("<Q", len(key))
        + key
        + struct.pack("<I", 8)
        + struct.pack("<Q", len(value))
        + value
    )


def kv_u32(key: bytes, value: int) -> bytes:
    return struct.pack("<Q", len(key)) + key + struct.pack("<II", 4, value)


def tensor_info(name: bytes, dims: list[int], offset: int) -> bytes:
    return (
        struct.pack("<Q", len(name)) + name + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 0, offset)
    )  # fmt: skip


def test_a_minimal_gguf_passes(tmp_path):
    path = tmp_path / "m.gguf"
    body = gguf(tensors=1, count=1, entries=kv_string(b"general.name", b"tiny"),
                infos=tensor_info(b"w", [2], 0))  # fmt: skip
    path.write_bytes(body + b"\0" * (64 - len(body) % 32) + b"\0" * 8)
    assert check_gguf(path) == {"version": 3, "tensors": 1, "metadata": 1}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (gguf(count=1, entries=kv_u32(b"general.alignment", 24)), "power of two"),
        (
            gguf(count=1, entries=struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 4, 2**40)),
            "past the end",
        ),
        (
            gguf(count=1, entries=struct.pack("<Q", 1) + b"k" + struct.pack("<I", 77)),
            "unknown value type",
        ),
        (gguf(tensors=1, infos=tensor_info(b"w", [2] * 9, 0)), "9 dimensions"),
        (gguf(tensors=1, infos=tensor_info(b"w", [2], 10**9)), "past the end"),
        (gguf(version=1), "version 1"),
    ],
    ids=["alignment", "array-too-long", "value-type", "dims", "tensor-offset", "version"],
)
def test_crafted_gguf_headers_are_refused(tmp_path, body, problem):
    path = tmp_path / "m.gguf"
    path.write_bytes(body + b"\0" * 64)
    with pytest.raises(ModelSourceError, match=problem):
        check_gguf(path)
