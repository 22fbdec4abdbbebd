"""Header checks of weight files before anything loads them (a crafted file gives an error).

A safetensors file starts with an 8-byte length and a JSON header of tensor entries; a GGUF file
with a magic, a version, counts, key-value metadata and tensor infos. Both are read by libraries
that trust those numbers (an allocation of the declared size, a seek to the declared offset), so
the numbers are checked against the file's real size first: lengths within the file, offsets in
bounds, known dtypes, counts that fit. Formats: https://huggingface.co/docs/safetensors and
https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from alloylm.errors import ModelSourceError

# safetensors dtype -> bytes per element (bit-packed and sub-byte types are not used for LLM weights)
SAFETENSORS_DTYPES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the library's own limit

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
# GGUF metadata value types with a fixed size, as struct formats (8 string and 9 array vary)
_GGUF_FORMAT = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "B",
    10: "Q",
    11: "q",
    12: "d",
}
_GGUF_FIXED = {kind: struct.calcsize("<" + fmt) for kind, fmt in _GGUF_FORMAT.items()}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
MAX_GGUF_DIMS = 8


def _refuse(path: Path, problem: str) -> ModelSourceError:
    return ModelSourceError(
        f"corrupt or crafted weight file: {problem}",
        file=str(path),
        hint="the file is truncated or not what its name says; download or export it again",
    )


def check_safetensors(path: str | Path) -> dict[str, Any]:
    """The header of a safetensors file, after checking it against the file; raises
    ModelSourceError naming the file and the first problem found."""
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        raise _refuse(path, f"{size} bytes, shorter than the 8-byte header length")
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise _refuse(path, f"header length {length} exceeds the file ({size} bytes)")
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as error:
        raise _refuse(path, f"header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise _refuse(path, "header is not a JSON object")
    data_size = size - 8 - length
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise _refuse(path, f"tensor {name!r} lacks dtype/shape/data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise _refuse(path, f"tensor {name!r} has unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise _refuse(path, f"tensor {name!r} has an invalid shape {shape!r}")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            raise _refuse(
                path,
                f"tensor {name!r} data_offsets {offsets!r} outside the data ({data_size} bytes)",
            )
        numel = 1
        for dim in shape:
            numel *= dim
        if offsets[1] - offsets[0] != numel * SAFETENSORS_DTYPES[dtype]:
            raise _refuse(
                path, f"tensor {name!r}: {offsets[1] - offsets[0]} bytes for shape {shape}"
            )
        spans.append(tuple(offsets))
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise _refuse(path, "tensors overlap in the data section")
    return header


class _Reader:
    """Bounded little-endian reads: never past the end of the file, never a huge allocation."""

    def __init__(self, handle: BinaryIO, size: int, path: Path) -> None:
        self.handle, self.size, self.path = handle, size, path

    def take(self, count: int, what: str) -> bytes:
        position = self.handle.tell()
        if count < 0 or position + count > self.size:
            raise _refuse(
                self.path, f"{what} at byte {position} runs past the end ({self.size} bytes)"
            )
        return self.handle.read(count)

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    def string(self, what: str) -> bytes:
        return self.take(self.unpack("Q", f"{what} length"), what)

    def skip_value(self, kind: int, what: str) -> Any:
        if kind in _GGUF_FIXED:
            return self.unpack(_GGUF_FORMAT[kind], what)
        if kind == _GGUF_STRING:
            return self.string(what)
        if kind == _GGUF_ARRAY:
            inner = self.unpack("I", f"{what} element type")
            count = self.unpack("Q", f"{what} element count")
            if inner in _GGUF_FIXED:
                self.take(count * _GGUF_FIXED[inner], what)  # bounded by the file size first
                return None
            if inner not in (_GGUF_STRING, _GGUF_ARRAY):
                raise _refuse(self.path, f"{what}: unknown array element type {inner}")
            if count > self.size:
                raise _refuse(self.path, f"{what}: {count} elements in a {self.size}-byte file")
            for _ in range(count):
                self.skip_value(inner, what)
            return None
        raise _refuse(self.path, f"{what}: unknown value type {kind}")


def check_gguf(path: str | Path) -> dict[str, int]:
    """Walk a GGUF file's header (magic, version, counts, metadata, tensor infos) with every
    length and offset checked against the file size; return {version, tensors, metadata}."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        reader = _Reader(handle, size, path)
        magic = reader.take(4, "magic") if size >= 4 else b""
        if magic != GGUF_MAGIC:
            raise _refuse(path, f"not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
        version = reader.unpack("I", "version")
        if version not in GGUF_VERSIONS:
            raise _refuse(path, f"GGUF version {version} (supported: {GGUF_VERSIONS})")
        tensors = reader.unpack("Q", "tensor count")
        entries = reader.unpack("Q", "metadata count")
        # each metadata entry takes >= 12 bytes and each tensor info >= 24: the counts must fit
        if entries * 12 + tensors * 24 > size:
            raise _refuse(path, f"{tensors} tensors and {entries} metadata entries in {size} bytes")
        alignment = 32
        for index in range(entries):
            key = reader.string(f"metadata key {index}")
            kind = reader.unpack("I", f"type of {key!r}")
            value = reader.skip_value(kind, f"metadata {key.decode(errors='replace')!r}")
            if key == b"general.alignment" and isinstance(value, int):
                alignment = value
        if alignment <= 0 or alignment & (alignment - 1):
            raise _refuse(path, f"general.alignment {alignment} is not a power of two")
        infos = []
        for index in range(tensors):
            name = reader.string(f"tensor name {index}").decode(errors="replace")
            dims = reader.unpack("I", f"dimensions of {name!r}")
            if dims == 0 or dims > MAX_GGUF_DIMS:
                raise _refuse(path, f"tensor {name!r} has {dims} dimensions")
            for axis in range(dims):
                reader.unpack("Q", f"dimension {axis} of {name!r}")
            reader.unpack("I", f"type of {name!r}")
            infos.append((name, reader.unpack("Q", f"offset of {name!r}")))
        header_end = handle.tell()
    data_start = -(-header_end // alignment) * alignment
    for name, offset in infos:
        if data_start + offset >= size:
            raise _refuse(
                path, f"tensor {name!r} starts at byte {data_start + offset}, past the end"
            )
    return {"version": version, "tensors": tensors, "metadata": entries}
