"""Streaming safetensors I/O: read tensors one at a time, write shards without holding them.

Reading: the headers of every shard are parsed up front (names, shapes, dtypes: no tensor data
read), then tensors are read one at a time at their header offsets.

Writing: since the merge plan knows every output name, shape and dtype before any tensor is
computed, each shard's header is written first, and each tensor's bytes go to their place as soon
as a merge worker has them, in any order; peak memory stays at the input tensors of the steps in
flight, whatever the number of outputs (sweeps).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

from alloylm.errors import ModelSourceError

SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}
TORCH_DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float64": torch.float64,
}
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def torch_dtype(name: str | None) -> torch.dtype | None:
    return None if name is None else TORCH_DTYPES[name]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: Path

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def read_header(path: Path) -> dict:
    """The safetensors header, checked against the file first (lengths, offsets, dtypes)."""
    from alloylm.models.file_checks import check_safetensors

    return check_safetensors(path)


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder (from the index when there is one)."""
    index = folder / INDEX_FILE
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / name for name in names]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        raise ModelSourceError(
            f"{folder} has no .safetensors weights"
            + (f" (only pickled {pickled[0]})" if pickled else ""),
            hint="merging reads safetensors only; convert with "
            "`AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir)` (safetensors is the default)",
        )
    return files


class ModelTensors:
    """Tensors of one model folder, read one at a time.

    Reads go straight from the file into a fresh tensor (offsets from the safetensors header):
    one copy, and no memory map whose touched pages would stay resident for the whole merge.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.infos: dict[str, TensorInfo] = {}
        self._offsets: dict[str, tuple[int, int]] = {}
        for file in weight_files(self.folder):
            header = read_header(file)
            data_start = 8 + struct.unpack("<Q", file.open("rb").read(8))[0]
            for name, meta in header.items():
                if name == "__metadata__":
                    continue
                dtype = SAFETENSORS_DTYPES.get(meta["dtype"])
                if dtype is None:
                    raise ModelSourceError(
                        f"{file}: tensor {name} has unsupported dtype {meta['dtype']}"
                    )
                self.infos[name] = TensorInfo(name, tuple(meta["shape"]), dtype, file)
                begin, end = meta["data_offsets"]
                self._offsets[name] = (data_start + begin, end - begin)
        self._handles: dict[Path, IO[bytes]] = {}

    def names(self) -> list[str]:
        return list(self.infos)

    def get(self, name: str) -> torch.Tensor:
        info = self.infos[name]
        start, nbytes = self._offsets[name]
        handle = self._handles.get(info.file)
        if handle is None:
            handle = self._handles[info.file] = open(info.file, "rb")  # noqa: SIM115 (closed in close())
        if nbytes >= MAP_FROM_BYTES:
            return _mapped(handle, start, nbytes).view(info.dtype).reshape(info.shape)
        buffer = torch.empty(nbytes, dtype=torch.uint8)
        if nbytes:
            handle.seek(start)
            if handle.readinto(memoryview(buffer.numpy())) != nbytes:
                raise ModelSourceError(
                    f"{info.file} is truncated (tensor {name})",
                    hint="re-download or re-save the model",
                )
        return buffer.view(info.dtype).reshape(info.shape)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


# A tensor this large (an embedding matrix) is mapped from the file rather than read: malloc would
# map fresh zero-filled pages for it anyway (glibc maps blocks over 32 MiB), and the copy from the
# page cache costs as much again.
MAP_FROM_BYTES = 32 << 20


def _mapped(handle: IO[bytes], start: int, nbytes: int) -> torch.Tensor:
    """Bytes [start, start + nbytes) of an open file as a uint8 tensor over a private mapping
    (copy-on-write: writing to the tensor never reaches the file). The mapping lives as long as
    the tensor does."""
    skip = start % mmap.ALLOCATIONGRANULARITY
    mapping = mmap.mmap(
        handle.fileno(), nbytes + skip, offset=start - skip, access=mmap.ACCESS_COPY
    )
    return torch.frombuffer(mapping, dtype=torch.uint8, count=nbytes, offset=skip)


def plan_shards(
    entries: list[tuple[str, tuple[int, ...], torch.dtype]], max_bytes: int
) -> list[list[tuple]]:
    """Split (name, shape, dtype) entries, in order, into shards of at most `max_bytes` each."""
    shards: list[list[tuple]] = [[]]
    size = 0
    for entry in entries:
        nbytes = _nbytes(entry[1], entry[2])
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    return shards


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    n = 1
    for d in shape:
        n *= d
    return n * torch.empty((), dtype=dtype).element_size()


def shard_names(count: int) -> list[str]:
    if count == 1:
        return [SINGLE_FILE]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


class StreamingModelWriter:
    """Writes a model whose tensor layout is known in advance. Every shard's header is written
    when the writer is made, so each tensor has a known place: tensors may arrive in any order and
    from several threads at once (`os.pwrite` at that offset), as each merge worker finishes one."""

    def __init__(
        self,
        folder: Path,
        entries: list[tuple[str, tuple[int, ...], torch.dtype]],
        max_shard_bytes: int,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shards = plan_shards(entries, max_shard_bytes)
        self.files = shard_names(len(self.shards))
        self._order = [(s, e) for s, shard in enumerate(self.shards) for e in shard]
        self._places: dict[str, tuple[int, int, tuple[int, ...], torch.dtype]] = {}
        self._written: set[str] = set()
        self._lock = threading.Lock()
        self._fds: list[int] = []
        try:
            for index in range(len(self.shards)):
                self._fds.append(self._open_shard(index))
        except BaseException:
            self.abort()
            raise

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write one tensor of the layout at its place; safe to call from several threads."""
        place = self._places.get(name)
        if place is None or tuple(tensor.shape) != place[2] or tensor.dtype != place[3]:
            expected = f"{place[2]} {place[3]}" if place else "no tensor of that name"
            raise RuntimeError(
                f"writer expected {name}: {expected}, got {tuple(tensor.shape)} {tensor.dtype}"
            )
        with self._lock:
            if name in self._written:
                raise RuntimeError(f"writer got {name} twice")
            self._written.add(name)
        shard_index, offset, _, _ = place
        data = memoryview(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy())
        while data:  # a single pwrite stops short of 2 GiB on Linux
            offset += (count := os.pwrite(self._fds[shard_index], data, offset))
            data = data[count:]

    def _open_shard(self, index: int) -> int:
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape, dtype in self.shards[index]:
            end = offset + _nbytes(shape, dtype)
            header[name] = {
                "dtype": DTYPE_NAMES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, end],
            }
            offset = end
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # safetensors aligns the data start to 8 bytes
        data_start = 8 + len(text)
        for name, shape, dtype in self.shards[index]:
            begin = header[name]["data_offsets"][0]
            self._places[name] = (index, data_start + begin, tuple(shape), dtype)
        path = self.folder / self.files[index]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.pwrite(fd, struct.pack("<Q", len(text)) + text, 0)
        return fd

    def finish(self) -> None:
        missing = [entry[0] for _, entry in self._order if entry[0] not in self._written]
        if missing:
            raise RuntimeError(
                f"writer closed before all tensors were written (next: {missing[0]})"
            )
        self.abort()
        if len(self.files) > 1:
            weight_map = {e[0]: self.files[s] for s, e in self._order}
            total = sum(_nbytes(e[1], e[2]) for _, e in self._order)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")

    def abort(self) -> None:
        """Close the shard files (finish() calls it; so does an interrupted merge)."""
        while self._fds:
            os.close(self._fds.pop())
