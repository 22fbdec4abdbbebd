"""8B-sized SLERP merges in bounded memory: alloylm against mergekit at 1B, 3B and 8B (issue 28).

Inputs: pairs of random models with the Llama-3 family's exact configs (independent seeds, bf16,
std 0.02, norms at 1), written once into --cache-dir as the Hub ships them: sharded safetensors
of at most 5 GB each with a model.safetensors.index.json:

    size  config                 vocab    hidden  layers  heads/kv  intermediate  tied   bf16 bytes
    1b    Llama-3.2-1B           128,256  2,048   16      32/8      8,192         yes    2.47 GB
    3b    Llama-3.2-3B           128,256  3,072   28      24/8      8,192         yes    6.43 GB
    8b    Llama-3.1-8B           128,256  4,096   32      32/8      14,336        no     16.06 GB

Each pair is merged with the study's SLERP schedule G (`variant_g`) from the SAME mergekit YAML,
by `alloy merge` and by `mergekit-yaml` (with its lazy-unpickle and low-memory options, output
shards of ~5 GB), output bfloat16. Per size it prints the whole-process wall time and peak RSS
(ru_maxrss of the process and its children) of each tool and their ratios; the outputs are then
compared streaming, tensor by tensor (one tensor of each output in memory at a time), in bf16
units in the last place. Then a sweep of 7 schedules in one `alloy merge` process at --sweep-size
(default 8b), against one merge at that size.

Disk: the parents stay in the cache (2.47 + 6.43 + 16.06 GB a model, x 2); a size's outputs are
deleted as soon as they are compared. A size needs its two parents plus two outputs at once (8b:
64.2 GB with its parents, 32.1 GB once they are cached); the sweep needs 7 outputs (8b: 112.4 GB).
A size, or the sweep, that would not fit the free space is skipped with the space it needs;
`--evict` deletes each size's parents once it is measured. The JSON records the load as the other
benchmarks do (benchmarks/_common.py). Measure on an idle machine with enough memory for the
parents' page cache to matter little.

    python benchmarks/merge_scale.py --mergekit-yaml .ci-venvs/mergekit/bin/mergekit-yaml
    python benchmarks/merge_scale.py --check      # tiny models of the same family: plumbing only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_force_argument,
    begin,
    portable_command,
    results_dir,
    run_record,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS_NAME = "merge_scale.json"
GB = 10**9
COMPARE_BLOCK = 1 << 22  # elements widened at a time when comparing outputs
SHARD = "5GB"
# mergekit counts shard sizes in parameters: 2.5B bf16 parameters are 5 GB
MERGEKIT_SHARD = "2500M"
MERGEKIT_OPTIONS = ("--lazy-unpickle", "--low-cpu-memory")
SIZES: dict[str, dict] = {
    "1b": {  # Llama-3.2-1B
        "vocab_size": 128256,
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 8192,
        "tie_word_embeddings": True,
    },
    "3b": {  # Llama-3.2-3B
        "vocab_size": 128256,
        "hidden_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 24,
        "num_key_value_heads": 8,
        "intermediate_size": 8192,
        "tie_word_embeddings": True,
    },
    "8b": {  # Llama-3.1-8B
        "vocab_size": 128256,
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "tie_word_embeddings": False,
    },
    # --check: the same family at a size that takes seconds; small shards exercise the index
    "tiny": {
        "vocab_size": 1024,
        "hidden_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 224,
        "tie_word_embeddings": False,
    },
}
SWEEP = [
    {"name": "g", "schedule": "variant_g"},
    {"name": "study", "schedule": "study"},
    {"name": "uniform", "schedule": "uniform"},
    {"name": "t0.1", "parameters": {"t": 0.1}},
    {"name": "t0.3", "parameters": {"t": 0.3}},
    {"name": "t0.7", "parameters": {"t": 0.7}},
    {"name": "t0.9", "parameters": {"t": 0.9}},
]
# Runs a command; prints its wall time and the peak RSS of it and its children (ru_maxrss, KiB).
MEASURE = (
    "import json,resource,subprocess,sys,time;t=time.perf_counter();"
    "p=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.PIPE,text=True);"
    "w=time.perf_counter()-t;r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
    "print(json.dumps({'rc':p.returncode,'wall_s':w,'peak_rss_mib':r/1024,'stderr':p.stderr[-2000:]}))"
)


def llama_config(size: str) -> dict:
    shape = SIZES[size]
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **shape,
        "head_dim": shape["hidden_size"] // shape["num_attention_heads"],
        "hidden_act": "silu",
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "dtype": "bfloat16",
    }


def layout(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor of a LlamaForCausalLM with this config, in the Hub's order."""
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    out = [("model.embed_tokens.weight", (v, h))]
    for n in range(config["num_hidden_layers"]):
        p = f"model.layers.{n}."
        out += [
            (p + "input_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (h, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, h)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "mlp.gate_proj.weight", (i, h)),
            (p + "mlp.up_proj.weight", (i, h)),
            (p + "mlp.down_proj.weight", (h, i)),
        ]
    out.append(("model.norm.weight", (h,)))
    if not config["tie_word_embeddings"]:
        out.append(("lm_head.weight", (v, h)))
    return out


def model_bytes(size: str) -> int:
    total = 0
    for _, shape in layout(llama_config(size)):
        n = 1
        for d in shape:
            n *= d
        total += 2 * n
    return total


def build_model(size: str, seed: int, target: Path, max_shard: str) -> Path:
    """A random model of `size` written once (sharded, with an index): tensors are drawn and
    written one at a time through alloylm's streaming writer, so building needs one tensor."""
    if (target / "built.json").exists():
        return target
    import torch

    from alloylm.merge.config import parse_size
    from alloylm.merge.tensors import StreamingModelWriter

    config = llama_config(size)
    tensors = layout(config)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    writer = StreamingModelWriter(
        tmp, [(n, s, torch.bfloat16) for n, s in tensors], parse_size(max_shard)
    )
    generator = torch.Generator().manual_seed(seed)
    for name, shape in tensors:
        if len(shape) == 1:
            tensor = torch.ones(shape, dtype=torch.bfloat16)
        else:
            tensor = torch.randn(shape, generator=generator, dtype=torch.bfloat16).mul_(0.02)
        writer.write(name, tensor)
        del tensor
    writer.finish()
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (tmp / "built.json").write_text(json.dumps({"size": size, "seed": seed}) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def write_configs(work: Path, base: Path, other: Path) -> tuple[Path, Path]:
    import yaml

    from alloylm.merge.plan import schedule_preset

    mergekit_cfg = {
        "models": [{"model": str(base)}, {"model": str(other)}],
        "merge_method": "slerp",
        "base_model": str(base),
        "parameters": {"t": schedule_preset("variant_g")},
        "dtype": "bfloat16",
    }
    sweep_cfg = {
        "method": "slerp",
        "base_model": str(base),
        "models": [str(other)],
        "dtype": "bfloat16",
        "sweep": SWEEP,
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "slerp_g_mergekit.yaml").write_text(yaml.safe_dump(mergekit_cfg, sort_keys=False))
    (work / "slerp_sweep7.yaml").write_text(yaml.safe_dump(sweep_cfg, sort_keys=False))
    return work / "slerp_g_mergekit.yaml", work / "slerp_sweep7.yaml"


def measure(command: list[str], output: Path) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    raw = subprocess.run(
        [sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(raw)
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result['stderr']}")
    return {
        "command": portable_command(command),
        "wall_s": round(result["wall_s"], 2),
        "peak_rss_mib": round(result["peak_rss_mib"], 1),
    }


def compare_streaming(ours: Path, theirs: Path, parents: list[Path]) -> dict:
    """Largest |ours - theirs| in bf16 ulps, one tensor of each output (and of each parent) read
    at a time, compared in blocks of COMPARE_BLOCK elements. The ulp is taken at the magnitude of the inputs and outputs of each
    element (as benchmarks/merge_speed.py does): a near-zero result after cancellation can
    only be compared at that scale."""
    import torch

    from alloylm.merge.tensors import ModelTensors

    a, b = ModelTensors(ours), ModelTensors(theirs)
    inputs = [ModelTensors(p) for p in parents]
    common = [name for name in a.names() if name in b.infos]
    worst_ulp, worst_name, over_one, total = 0.0, None, 0, 0
    try:
        for name in common:
            # flat views in the stored dtype; widened a block at a time (an 8B model's
            # embedding is 525M elements: widened whole, its working copies would take 15 GB)
            flat = [
                t.reshape(-1) for t in (a.get(name), b.get(name), *(r.get(name) for r in inputs))
            ]
            for start in range(0, flat[0].numel(), COMPARE_BLOCK):
                x, y, *parent_blocks = (t[start : start + COMPARE_BLOCK].float() for t in flat)
                scale = torch.maximum(x.abs(), y.abs())
                for block in parent_blocks:
                    scale = torch.maximum(scale, block.abs())
                ulp = torch.exp2(torch.floor(torch.log2(scale.clamp_min(2.0**-126))) - 7)
                in_ulps = (x - y).abs() / ulp
                block_worst = float(in_ulps.max()) if in_ulps.numel() else 0.0
                if block_worst > worst_ulp:
                    worst_ulp, worst_name = block_worst, name
                over_one += int((in_ulps > 1).sum())
                total += in_ulps.numel()
            del flat
    finally:
        for reader in (a, b, *inputs):
            reader.close()
    return {
        "common_tensors": len(common),
        "only_in_alloylm": sorted(set(a.names()) - set(b.infos)),
        "only_in_mergekit": sorted(set(b.names()) - set(a.infos)),
        "max_diff_bf16_ulps": worst_ulp,
        "max_diff_tensor": worst_name,
        "elements_over_one_ulp": over_one,
        "total_elements": total,
    }


def free_bytes(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(folder).free


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mergekit-yaml",
        default=str(REPO / ".ci-venvs" / "mergekit" / "bin" / "mergekit-yaml"),
        help="mergekit's mergekit-yaml, in its own venv (.ci/side-venvs.sh)",
    )
    parser.add_argument("--sizes", default="1b,3b,8b", help="comma-separated: 1b, 3b, 8b, tiny")
    parser.add_argument("--sweep-size", default="8b", help="size of the 7-schedule sweep")
    parser.add_argument(
        "--cache-dir",
        default=os.environ.get("ALLOY_BENCH_DIR", "/tmp/alloylm-merge-scale"),
        help="where the random parents are kept between runs (and the outputs are written)",
    )
    parser.add_argument("--max-shard-size", default=SHARD, help="shards of parents and outputs")
    parser.add_argument(
        "--evict", action="store_true", help="delete each size's parents once it is measured"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="plumbing only: tiny models of the same family with 200 KB shards, results in a "
        "scratch folder unless ALLOY_BENCH_RESULTS is set",
    )
    add_force_argument(parser)
    args = parser.parse_args(argv)
    if args.check:
        args.sizes, args.sweep_size, args.max_shard_size = "tiny", "tiny", "200KB"
        args.cache_dir = str(Path(args.cache_dir) / "check")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in [*sizes, args.sweep_size] if s not in SIZES]
    if unknown:
        raise SystemExit(f"unknown size(s) {unknown}; known: {', '.join(SIZES)}")
    run = begin("merge_scale", force=args.force or args.check)
    cache = Path(args.cache_dir)
    mergekit = Path(args.mergekit_yaml)
    have_mergekit = mergekit.exists()
    print("space needed (parents cached in " + str(cache) + " are not counted again):")
    for s in sizes:
        print(
            f"  {s}: parents 2 x {model_bytes(s) / GB:.2f} GB, outputs 2 x {model_bytes(s) / GB:.2f} GB"
        )
    print(
        f"  sweep at {args.sweep_size}: 7 outputs, {7 * model_bytes(args.sweep_size) / GB:.1f} GB"
    )
    results: dict = {"sizes": {}, "cache_dir": str(cache), "mergekit_yaml": str(mergekit)}
    ours = [sys.executable, "-m", "alloylm.cli.main", "merge"]
    for size in sizes:
        parents = [cache / f"{size}-seed{seed}" for seed in (0, 1)]
        missing = sum(model_bytes(size) for p in parents if not (p / "built.json").exists())
        needed = missing + 2 * model_bytes(size)
        if free_bytes(cache) < needed:
            print(
                f"{size}: skipped, needs {needed / GB:.1f} GB free, has {free_bytes(cache) / GB:.1f}"
            )
            results["sizes"][size] = {"skipped": f"needs {needed / GB:.1f} GB free"}
            continue
        started = time.perf_counter()
        for seed, parent in enumerate(parents):
            build_model(size, seed, parent, args.max_shard_size)
        built_s = round(time.perf_counter() - started, 1)
        work = cache / f"work-{size}"
        config, _ = write_configs(work, *parents)
        for parent in parents:  # warm the page cache as for every run (once read, both tools)
            for file in sorted(parent.glob("*.safetensors")):
                with open(file, "rb") as handle:
                    while handle.read(1 << 26):
                        pass
        entry: dict = {"model_bytes": model_bytes(size), "build_s": built_s}
        out_ours, out_theirs = work / "out_alloylm", work / "out_mergekit"
        entry["alloylm"] = measure(
            [*ours, str(config), str(out_ours), "--quiet", "--max-shard-size", args.max_shard_size],
            out_ours,
        )
        if have_mergekit:
            shard = MERGEKIT_SHARD if not args.check else "100K"
            entry["mergekit"] = measure(
                [str(mergekit), str(config), str(out_theirs), *MERGEKIT_OPTIONS]
                + ["--out-shard-size", shard],
                out_theirs,
            )
            entry["speedup_vs_mergekit"] = round(
                entry["mergekit"]["wall_s"] / entry["alloylm"]["wall_s"], 2
            )
            entry["memory_ratio_vs_mergekit"] = round(
                entry["alloylm"]["peak_rss_mib"] / entry["mergekit"]["peak_rss_mib"], 2
            )
            entry["difference"] = compare_streaming(out_ours, out_theirs, parents)
        entry["output_files"] = sorted(p.name for p in out_ours.glob("*.safetensors*"))
        shutil.rmtree(out_ours, ignore_errors=True)
        shutil.rmtree(out_theirs, ignore_errors=True)
        results["sizes"][size] = entry
        if size == args.sweep_size:
            results["sweep"] = sweep(work, parents, entry, args)
        if args.evict:
            for parent in parents:
                shutil.rmtree(parent, ignore_errors=True)
    peaks = [e["alloylm"]["peak_rss_mib"] for e in results["sizes"].values() if "alloylm" in e]
    if len(peaks) > 1:
        results["alloylm_peak_rss_largest_over_smallest"] = round(max(peaks) / min(peaks), 2)
    results["mergekit"] = (
        "compared" if have_mergekit else f"not found at {mergekit}: comparison skipped"
    )
    results["run"] = run_record(run)
    print_table(results)
    folder = results_dir()
    if args.check and "ALLOY_BENCH_RESULTS" not in os.environ:
        folder = cache / "results"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESULTS_NAME).write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {folder / RESULTS_NAME}")
    return 0


def sweep(work: Path, parents: list[Path], single: dict, args: argparse.Namespace) -> dict:
    needed = 7 * model_bytes(args.sweep_size)
    if free_bytes(work) < needed:
        print(f"sweep: skipped, needs {needed / GB:.1f} GB free, has {free_bytes(work) / GB:.1f}")
        return {"skipped": f"needs {needed / GB:.1f} GB free"}
    _, sweep_yaml = write_configs(work, *parents)
    out = work / "out_sweep"
    ours = [sys.executable, "-m", "alloylm.cli.main", "merge"]
    entry = measure(
        [*ours, str(sweep_yaml), str(out), "--quiet", "--max-shard-size", args.max_shard_size], out
    )
    entry["outputs"] = sorted(p.name for p in out.iterdir() if p.is_dir())
    shutil.rmtree(out, ignore_errors=True)
    entry["size"] = args.sweep_size
    entry["over_one_merge"] = round(entry["wall_s"] / single["alloylm"]["wall_s"], 2)
    return entry


def print_table(results: dict) -> None:
    print(f"\n{'size':<6}{'tool':<10}{'wall s':>10}{'peak RSS MiB':>14}{'vs mergekit':>24}")
    for size, entry in results["sizes"].items():
        if "skipped" in entry:
            print(f"{size:<6}skipped: {entry['skipped']}")
            continue
        ratio = ""
        if "mergekit" in entry:
            ratio = (
                f"{entry['speedup_vs_mergekit']}x faster, {entry['memory_ratio_vs_mergekit']}x RSS"
            )
        for tool in ("alloylm", "mergekit"):
            r = entry.get(tool)
            if r:
                print(f"{size:<6}{tool:<10}{r['wall_s']:>10.2f}{r['peak_rss_mib']:>14.0f}"
                      f"{ratio if tool == 'alloylm' else '':>24}")  # fmt: skip
        d = entry.get("difference")
        if d:
            print(
                f"      outputs: {d['max_diff_bf16_ulps']:.2f} bf16 ulps at most "
                f"({d['max_diff_tensor']}), {d['elements_over_one_ulp']} of "
                f"{d['total_elements']} elements over 1 ulp, {d['common_tensors']} tensors"
            )
    s = results.get("sweep")
    if s and "skipped" not in s:
        print(
            f"sweep of 7 at {s['size']}: {s['wall_s']:.2f} s, {s['over_one_merge']}x one merge, "
            f"peak RSS {s['peak_rss_mib']:.0f} MiB"
        )
    elif s:
        print(f"sweep: skipped, {s['skipped']}")
    if "alloylm_peak_rss_largest_over_smallest" in results:
        print(
            "alloylm peak RSS, largest size over smallest: "
            f"{results['alloylm_peak_rss_largest_over_smallest']}x"
        )
    print(f"mergekit: {results['mergekit']}")


if __name__ == "__main__":
    sys.exit(main())
