"""Merging tensors in parallel threads (issue 16) writes the same bytes as merging them one by one,
for one output and for a sweep, also when some tensors are big enough to be merged alone; and a
merge process never imports transformers (its import was 1.5 s of a 5.4 s merge)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from alloylm.merge import engine
from alloylm.merge.config import settings_from_dict
from alloylm.merge.engine import MergeOutput, run_merge


def _bytes(folder: Path) -> dict[str, bytes]:
    return {file.name: file.read_bytes() for file in sorted(folder.glob("*.safetensors"))}


def _merge_all(settings, root: Path, workers: int):
    outputs = [
        MergeOutput(name, params, root / (name or "out")) for name, params in settings.variants()
    ]
    reports = run_merge(settings, outputs, workers=workers)
    return [(_bytes(o.folder), r.summary()) for o, r in zip(outputs, reports, strict=True)]


@pytest.mark.parametrize("big_elements", [engine.BIG_TENSOR_ELEMENTS, 1000])
def test_workers_write_what_one_thread_writes(
    tiny_llama, tiny_llama_other, tmp_path, monkeypatch, big_elements
):
    # 1000 elements: the embedding and MLP matrices of the tiny model count as big (run alone)
    monkeypatch.setattr(engine, "BIG_TENSOR_ELEMENTS", big_elements)
    settings = settings_from_dict(
        {
            "base_model": str(tiny_llama),
            "models": [str(tiny_llama_other)],
            "dtype": "bfloat16",
            "sweep": [
                {"name": "study", "schedule": "study"},
                {"name": "g", "schedule": "variant_g"},
                {"name": "half", "parameters": {"t": 0.5}},
            ],
        }
    )
    one = _merge_all(settings, tmp_path / "one", workers=1)
    three = _merge_all(settings, tmp_path / "three", workers=3)
    assert len(one) == 3 and one == three
    assert all(files for files, _ in one)


def test_a_merge_process_does_not_import_transformers(tiny_llama, tiny_llama_other, tmp_path):
    config = tmp_path / "slerp.yaml"
    config.write_text(
        f"merge_method: slerp\nbase_model: {tiny_llama}\n"
        f"models:\n  - model: {tiny_llama}\n  - model: {tiny_llama_other}\n"
        "parameters:\n  t: 0.5\ndtype: bfloat16\n"
    )
    probe = (
        "import sys, runpy\n"
        f"sys.argv = ['alloy-merge', {str(config)!r}, {str(tmp_path / 'out')!r}, '--quiet']\n"
        "try:\n    runpy.run_module('alloylm.cli.merge', run_name='__main__')\n"
        "except SystemExit as stop:\n    assert not stop.code, stop.code\n"
        "print('TRANSFORMERS' if 'transformers' in sys.modules else 'CLEAN')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "CLEAN"
    assert (tmp_path / "out" / "config.json").exists()


@pytest.mark.parametrize(
    "method",
    [
        {
            "sweep": [
                {"name": "study", "schedule": "study"},
                {"name": "half", "parameters": {"t": 0.5}},
            ]
        },
        {"method": "linear"},
    ],
)
def test_row_blocks_write_what_whole_tensors_write(
    tiny_llama, tiny_llama_other, tmp_path, monkeypatch, method
):
    from alloylm.merge import apply

    base = {"base_model": str(tiny_llama), "models": [str(tiny_llama_other)], "dtype": "bfloat16"}
    if method.get("method") == "linear":
        base = {
            "method": "linear",
            "models": [
                {"model": str(tiny_llama), "parameters": {"weight": 0.7}},
                {"model": str(tiny_llama_other), "parameters": {"weight": 0.3}},
            ],
            "dtype": "bfloat16",
        }
    else:
        base.update(method)
    settings = settings_from_dict(base)
    monkeypatch.setattr(engine, "BIG_TENSOR_ELEMENTS", 10**12)  # nothing merged in blocks
    whole = _merge_all(settings, tmp_path / "whole", workers=1)
    calls = []
    original = apply.apply_method_in_row_blocks
    monkeypatch.setattr(
        engine,
        "apply_method_in_row_blocks",
        lambda *a, **k: calls.append(1) or original(*a, **k),
    )
    monkeypatch.setattr(engine, "BIG_TENSOR_ELEMENTS", 1000)
    monkeypatch.setattr(apply, "ROW_BLOCK_ELEMENTS", 300)  # a few rows per block, a short tail
    blocks = _merge_all(settings, tmp_path / "blocks", workers=1)
    assert calls, "no tensor was merged in row blocks"
    assert blocks == whole
    assert _merge_all(settings, tmp_path / "blocks_in_threads", workers=3) == whole


def test_an_interrupted_merge_stops_every_worker_before_the_files_are_closed(
    tiny_llama, tiny_llama_other, tmp_path, monkeypatch
):
    """Workers write their own tensors: when the merge stops (Ctrl-C, or a failure in this thread
    while workers run), it waits for them before it closes the shard files, so no worker writes
    to a closed descriptor, or to another file that reused its number."""
    import threading
    import time

    from alloylm.contract import Progress
    from alloylm.merge import tensors

    settings = settings_from_dict(
        {
            "base_model": str(tiny_llama),
            "models": [str(tiny_llama_other)],
            "dtype": "bfloat16",
            "parameters": {"t": 0.5},
        }
    )
    closed = threading.Event()
    late_writes = []
    real_write, real_abort = tensors.StreamingModelWriter.write, tensors.StreamingModelWriter.abort

    def write(self, name, tensor):
        time.sleep(0.05)  # workers are busy when the interruption comes
        if closed.is_set():
            late_writes.append(name)
        return real_write(self, name, tensor)

    def abort(self):
        closed.set()
        return real_abort(self)

    class Interrupted(Progress):
        def update(self, step, **fields):
            if step == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(tensors.StreamingModelWriter, "write", write)
    monkeypatch.setattr(tensors.StreamingModelWriter, "abort", abort)
    ((name, parameters),) = settings.variants()
    with pytest.raises(KeyboardInterrupt):
        run_merge(
            settings,
            [MergeOutput(name, parameters, tmp_path / "out")],
            workers=3,
            progress=Interrupted(),
        )
    assert closed.is_set()
    time.sleep(0.5)
    assert late_writes == []
    assert not [t for t in threading.enumerate() if t.name.startswith("merge")]
