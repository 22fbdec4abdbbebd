"""benchmarks/merge_scale.py: its model shapes are the Llama-3 family's, and its plumbing runs at
a tiny size (sharded random parents written once, `alloy merge`, the sweep, the JSON with its
load record, outputs cleaned up). Nothing is timed here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _module():
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(
        "bench_merge_scale", BENCHMARKS / "merge_scale.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_sizes_have_the_published_parameter_counts():
    bench = _module()
    # Llama-3.2-1B, Llama-3.2-3B, Llama-3.1-8B: 1.24B, 3.21B, 8.03B parameters, bf16
    assert bench.model_bytes("1b") == 2 * 1_235_814_400
    assert bench.model_bytes("3b") == 2 * 3_212_749_824
    assert bench.model_bytes("8b") == 2 * 8_030_261_248


def test_check_run_builds_sharded_parents_merges_and_cleans_up(tmp_path, monkeypatch):
    bench = _module()
    monkeypatch.setenv("ALLOY_BENCH_RESULTS", str(tmp_path / "results"))
    cache = tmp_path / "cache"
    argv = ["--check", "--force", "--mergekit-yaml", "/nonexistent", "--cache-dir", str(cache)]
    assert bench.main(argv) == 0
    results = json.loads((tmp_path / "results" / "merge_scale.json").read_text())
    tiny = results["sizes"]["tiny"]
    assert tiny["alloylm"]["peak_rss_mib"] > 0 and tiny["alloylm"]["wall_s"] > 0
    # 200 KB shards: the parents and the output are sharded, with an index
    assert "model.safetensors.index.json" in tiny["output_files"] and len(tiny["output_files"]) > 2
    parent = cache / "check" / "tiny-seed0"
    assert (parent / "model.safetensors.index.json").exists()
    assert results["sweep"]["outputs"] == sorted(v["name"] for v in bench.SWEEP)
    assert "run" in results and "load_at_start" in results["run"]
    assert results["mergekit"].startswith("not found")
    work = cache / "check" / "work-tiny"
    assert not (work / "out_alloylm").exists() and not (work / "out_sweep").exists()
    # the parents are written once: a second run reuses them
    stamp = (parent / "built.json").stat().st_mtime_ns
    assert bench.main(argv) == 0
    assert (parent / "built.json").stat().st_mtime_ns == stamp


def test_streaming_comparison_counts_ulps_block_by_block(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    bench = _module()
    monkeypatch.setattr(bench, "COMPARE_BLOCK", 4)  # 3 blocks for a tensor of 10
    folders = {}
    for name, bump in (("ours", 0), ("theirs", 3), ("parent", 0)):
        w = torch.ones(10, dtype=torch.bfloat16)
        w[9] += bump * 2.0**-7  # bf16 numbers near 1 are 2**-7 apart: `bump` ulps
        folders[name] = tmp_path / name
        folders[name].mkdir()
        save_file(
            {"w": w, "same": torch.ones(3, dtype=torch.bfloat16)},
            str(folders[name] / "model.safetensors"),
        )
    d = bench.compare_streaming(folders["ours"], folders["theirs"], [folders["parent"]])
    assert d["max_diff_bf16_ulps"] == 3.0 and d["max_diff_tensor"] == "w"
    assert d["elements_over_one_ulp"] == 1 and d["total_elements"] == 13
    assert d["common_tensors"] == 2
