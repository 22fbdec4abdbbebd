"""Streaming safetensors writer and reader: round trip, shards, index."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors.torch import load_file, save_file

from alloylm.merge.config import parse_size
from alloylm.merge.tensors import INDEX_FILE, ModelTensors, StreamingModelWriter


def test_round_trip_single_and_sharded(tmp_path):
    tensors = {
        "a": torch.randn(3, 4),
        "b": torch.randn(5).to(torch.bfloat16),
        "c": torch.arange(6, dtype=torch.int64).reshape(2, 3),
    }
    layout = [(n, tuple(t.shape), t.dtype) for n, t in tensors.items()]
    for max_bytes, files in ((10**9, 1), (48, 3)):
        folder = tmp_path / f"out{files}"
        writer = StreamingModelWriter(folder, layout, max_bytes)
        for name, tensor in tensors.items():
            writer.write(name, tensor)
        writer.finish()
        shards = sorted(folder.glob("*.safetensors"))
        assert len(shards) == files
        loaded = {}
        for shard in shards:
            loaded.update(load_file(shard))
        assert loaded.keys() == tensors.keys()
        for name, tensor in tensors.items():
            assert torch.equal(loaded[name], tensor)
        assert (folder / INDEX_FILE).exists() == (files > 1)
        if files > 1:
            assert set(json.loads((folder / INDEX_FILE).read_text())["weight_map"]) == set(tensors)
        reader = ModelTensors(folder)
        assert torch.equal(reader.get("b"), tensors["b"])
        reader.close()


def test_tensors_may_arrive_in_any_order_from_several_threads(tmp_path):
    tensors = {f"t{i}": torch.randn(i + 1, 5).to(torch.bfloat16) for i in range(40)}
    layout = [(n, tuple(t.shape), t.dtype) for n, t in tensors.items()]
    writer = StreamingModelWriter(tmp_path, layout, 300)  # several shards
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda name: writer.write(name, tensors[name]), reversed(tensors)))
    writer.finish()
    loaded = {}
    for shard in sorted(tmp_path.glob("*.safetensors")):
        loaded.update(load_file(shard))
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in tensors.items())


def test_writer_refuses_unknown_misshapen_repeated_and_missing_tensors(tmp_path):
    writer = StreamingModelWriter(
        tmp_path, [("a", (2,), torch.float32), ("b", (2,), torch.float32)], 10**9
    )
    with pytest.raises(RuntimeError, match="no tensor of that name"):
        writer.write("c", torch.zeros(2))
    with pytest.raises(RuntimeError, match="expected b"):
        writer.write("b", torch.zeros(3))
    writer.write("b", torch.zeros(2))
    with pytest.raises(RuntimeError, match="b twice"):
        writer.write("b", torch.zeros(2))
    with pytest.raises(RuntimeError, match="next: a"):
        writer.finish()
    writer.abort()


def test_reader_matches_safetensors(tmp_path):
    tensors = {"w": torch.randn(7, 3), "empty": torch.zeros(0)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    reader = ModelTensors(tmp_path)
    assert reader.infos["w"].shape == (7, 3)
    assert torch.equal(reader.get("w"), tensors["w"])
    assert reader.get("empty").numel() == 0


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size(123) == 123


def test_a_large_tensor_is_mapped_and_reads_as_the_file_holds_it(tmp_path, monkeypatch):
    from alloylm.merge import tensors as module

    monkeypatch.setattr(module, "MAP_FROM_BYTES", 64)  # "w" (84 bytes, at an unaligned offset)
    tensors = {"small": torch.arange(5, dtype=torch.float32), "w": torch.randn(7, 3)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    reader = ModelTensors(tmp_path)
    mapped = reader.get("w")
    reader.close()  # the mapping outlives the reader's file handle
    assert torch.equal(mapped, tensors["w"]) and torch.equal(reader.get("small"), tensors["small"])
    mapped.mul_(0)  # copy-on-write: the file keeps its bytes
    assert torch.equal(ModelTensors(tmp_path).get("w"), tensors["w"])
