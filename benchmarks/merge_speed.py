"""SLERP merge speed and memory: alloylm against mergekit (`mergekit-yaml`), whole process vs whole process.

Inputs: the embedded SmolLM2-135M-Instruct and a perturbed copy of it (seeded Gaussian noise,
5% of each tensor's standard deviation, so that weight matrices sit below SLERP's |cos| > 0.9995
linear-fallback threshold and the spherical path is measured), written once to --work-dir. Both tools merge them with
the study's SLERP schedule (self_attn [0, .5, .3, .7, 1], mlp [1, .5, .7, .3, 0], rest .5) from
the SAME mergekit YAML file, output dtype bfloat16. Also measured: a sweep of 7 schedules in one
alloylm process (each parent read once). Reported: wall time and peak RSS (whole process,
imports included) per run, speed and memory ratios, and the largest element-wise difference
between the two tools' outputs.

    python benchmarks/merge_speed.py --mergekit-yaml /work/mergekit-venv/bin/mergekit-yaml
    python benchmarks/merge_speed.py --methods all     # also one row per merge method (below)

`--methods` adds a row per merge method (METHOD_ROWS: every method alloylm and mergekit 0.1.5
share), each tool on the same parents (the pair, plus a second perturbed copy where a method
merges more than two models) from the same mergekit YAML with `dtype: float32`: wall time, peak RSS
and the largest difference, per method.

mergekit lives in its own virtual environment (see docs/merge.md); without it the script still
measures alloylm and says that the comparison was skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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
RESULTS = results_dir() / "merge_speed.json"
MODEL = os.environ.get("ALLOY_BENCH_MODEL", "embedded:smollm2-135m-instruct")  # tiny: smoke run
STUDY_T = [
    {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
    {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
    {"value": 0.5},
]
SWEEP = [
    {"name": "study", "schedule": "study"},
    {"name": "variant_g", "schedule": "variant_g"},
    {"name": "uniform", "schedule": "uniform"},
    {"name": "t0.1", "parameters": {"t": 0.1}},
    {"name": "t0.3", "parameters": {"t": 0.3}},
    {"name": "t0.7", "parameters": {"t": 0.7}},
    {"name": "t0.9", "parameters": {"t": 0.9}},
]
# One row per merge method: the mergekit YAML beyond `models:`/`base_model:` (BASE, A, B: the
# base, the perturbed copy, a second perturbed copy), every method of mergekit 0.1.5 alloylm has.
METHOD_ROWS: dict[str, dict] = {
    "slerp": {"models": ["BASE", "A"], "base_model": "BASE", "parameters": {"t": STUDY_T}},
    "linear": {"models": [("BASE", {"weight": 0.5}), ("A", {"weight": 0.5})]},
    "task_arithmetic": {"models": [("A", {"weight": 0.7})], "base_model": "BASE"},
    "ties": {
        "models": [("A", {"weight": 0.7, "density": 0.5}), ("B", {"weight": 0.3, "density": 0.5})],
        "base_model": "BASE",
    },
    "dare_linear": {
        "models": [("A", {"weight": 0.7, "density": 0.5}), ("B", {"weight": 0.3, "density": 0.5})],
        "base_model": "BASE",
    },
    "dare_ties": {
        "models": [("A", {"weight": 0.7, "density": 0.5}), ("B", {"weight": 0.3, "density": 0.5})],
        "base_model": "BASE",
    },
    "breadcrumbs": {
        "models": [("A", {"weight": 0.7, "density": 0.8}), ("B", {"weight": 0.3, "density": 0.8})],
        "base_model": "BASE",
    },
    "breadcrumbs_ties": {
        "models": [("A", {"weight": 0.7, "density": 0.8}), ("B", {"weight": 0.3, "density": 0.8})],
        "base_model": "BASE",
    },
    "della": {
        "models": [("A", {"weight": 0.7, "density": 0.5}), ("B", {"weight": 0.3, "density": 0.5})],
        "base_model": "BASE",
    },
    "della_linear": {
        "models": [("A", {"weight": 0.7, "density": 0.5}), ("B", {"weight": 0.3, "density": 0.5})],
        "base_model": "BASE",
    },
    "model_stock": {"models": ["A", "B"], "base_model": "BASE"},
    "nuslerp": {"models": [("A", {"weight": 0.4}), ("B", {"weight": 0.6})], "base_model": "BASE"},
    "multislerp": {
        "models": [("A", {"weight": 0.4}), ("B", {"weight": 0.6})],
        "base_model": "BASE",
    },
    "karcher": {"models": ["BASE", "A", "B"]},
    "sce": {"models": ["A", "B"], "base_model": "BASE", "parameters": {"select_topk": 0.5}},
    "arcee_fusion": {"models": ["A"], "base_model": "BASE"},
    "nearswap": {"models": ["A"], "base_model": "BASE", "parameters": {"t": 0.001}},
    "passthrough": {"slices": [("BASE", 0, "HALF"), ("A", "HALF", "ALL")]},
}
# mergekit again with one OpenMP thread, as alloylm merges by default (fairness check).
MERGEKIT_ONE_THREAD = ["env", "OMP_NUM_THREADS=1"]
# Runs a command and prints its wall time and the peak RSS of it and its children (ru_maxrss, KiB).
MEASURE = (
    "import json,resource,subprocess,sys,time;t=time.perf_counter();"
    "p=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.PIPE,text=True);"
    "w=time.perf_counter()-t;r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
    "print(json.dumps({'rc':p.returncode,'wall_s':w,'peak_rss_mib':r/1024,'stderr':p.stderr[-2000:]}))"
)


def perturbed_copy(base: Path, target: Path, seed: int = 0, scale: float = 0.05) -> Path:
    """base + seeded noise (scale x each tensor's std), saved once as a model folder."""
    if (target / "model.safetensors").exists():
        return target
    import torch
    from safetensors.torch import load_file, save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = load_file(str(base / "model.safetensors"))
    noisy = {}
    for name, tensor in tensors.items():
        std = float(tensor.float().std()) if tensor.numel() > 1 else 1.0
        noise = torch.randn(tensor.shape, generator=generator) * (scale * (std or 1.0))
        noisy[name] = (tensor.float() + noise).to(tensor.dtype).contiguous()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for item in base.iterdir():
        if (
            item.is_file()
            and item.suffix != ".safetensors"
            and item.name not in ("alloy.json", "README.md")
        ):
            shutil.copyfile(item, tmp / item.name)
    save_file(noisy, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    os.replace(tmp, target)
    return target


def write_configs(work: Path, base: Path, other: Path) -> tuple[Path, Path]:
    import yaml

    mergekit_cfg = {
        "models": [{"model": str(base)}, {"model": str(other)}],
        "merge_method": "slerp",
        "base_model": str(base),
        "parameters": {"t": STUDY_T},
        "dtype": "bfloat16",
    }
    sweep_cfg = {
        "method": "slerp",
        "base_model": str(base),
        "models": [str(other)],
        "dtype": "bfloat16",
        "sweep": SWEEP,
    }
    (work / "slerp_mergekit.yaml").write_text(yaml.safe_dump(mergekit_cfg, sort_keys=False))
    (work / "slerp_sweep7.yaml").write_text(yaml.safe_dump(sweep_cfg, sort_keys=False))
    return work / "slerp_mergekit.yaml", work / "slerp_sweep7.yaml"


def method_config(method: str, parents: dict[str, Path], layers: int) -> dict:
    """The mergekit YAML of METHOD_ROWS[method] with the parents' folders filled in."""
    row = dict(METHOD_ROWS[method])
    config: dict = {"merge_method": method, "dtype": "float32"}
    if "slices" in row:
        bounds = {0: 0, "HALF": layers // 2, "ALL": layers}
        config["slices"] = [
            {"sources": [{"model": str(parents[m]), "layer_range": [bounds[a], bounds[b]]}]}
            for m, a, b in row.pop("slices")
        ]
    else:
        config["models"] = [
            {"model": str(parents[m])}
            if isinstance(m, str)
            else {"model": str(parents[m[0]]), "parameters": m[1]}
            for m in row.pop("models")
        ]
    if "base_model" in row:
        config["base_model"] = str(parents[row.pop("base_model")])
    config.update(row)
    return config


def measure_methods(
    methods: list[str], work: Path, parents: dict[str, Path], mergekit_bin: str | None, repeats: int
) -> dict:
    """Per method: alloylm's and mergekit's wall time and peak RSS, and their largest difference."""
    import yaml

    from alloylm.merge.checks import num_layers, read_config

    layers = num_layers(read_config(parents["BASE"])) or 2
    rows = {}
    for method in methods:
        config = work / f"method_{method}.yaml"
        config.write_text(yaml.safe_dump(method_config(method, parents, layers), sort_keys=False))
        ours_out, theirs_out = work / f"out_{method}_alloylm", work / f"out_{method}_mergekit"
        ours_cmd = [
            sys.executable,
            "-m",
            "alloylm.cli.merge",
            str(config),
            str(ours_out),
            "--quiet",
        ]
        row: dict = {"config": str(config), "alloylm": measure(ours_cmd, ours_out, repeats)}
        if mergekit_bin:
            row["mergekit"] = measure(
                [mergekit_bin, str(config), str(theirs_out)], theirs_out, repeats
            )
            row["speedup_vs_mergekit"] = round(
                row["mergekit"]["wall_s"] / row["alloylm"]["wall_s"], 2
            )
            row["difference"] = max_difference(ours_out, theirs_out, list(set(parents.values())))
        rows[method] = row
    return rows


def measure(command: list[str], output: Path, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        shutil.rmtree(output, ignore_errors=True)
        raw = subprocess.run(
            [sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, check=True
        ).stdout
        result = json.loads(raw)
        if result["rc"] != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{result['stderr']}")
        runs.append(result)
    walls = [r["wall_s"] for r in runs]
    return {
        "command": portable_command(command),
        "wall_s_runs": [round(w, 2) for w in walls],
        # the fastest run is the one least disturbed by other work on a shared machine
        "wall_s": round(min(walls), 2),
        "wall_s_median": round(statistics.median(walls), 2),
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs), 1),
    }


def _tensors(folder: Path) -> dict:
    from safetensors import safe_open

    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                out[name] = handle.get_tensor(name)
    return out


def max_difference(ours: Path, theirs: Path, parents: list[Path]) -> dict:
    """Largest |ours - theirs| over common tensors, absolute and in bf16 units in the last place.

    The ulp is taken at the magnitude of the inputs (max |parent|, |output|) of each element:
    s0*a + s1*b is computed to that precision, so a near-zero output after cancellation can only
    be compared at that scale.
    """
    import torch

    a, b = _tensors(ours), _tensors(theirs)
    inputs = [_tensors(p) for p in parents]
    common = sorted(set(a) & set(b))
    worst, worst_ulp, differing, over_one_ulp, total, worst_name = 0.0, 0.0, 0, 0, 0, None
    for name in common:
        x, y = a[name].float(), b[name].float()
        scale = torch.maximum(x.abs(), y.abs())
        for parent in inputs:
            scale = torch.maximum(scale, parent[name].to(torch.bfloat16).float().abs())
        ulp = torch.exp2(torch.floor(torch.log2(scale.clamp_min(2.0**-126))) - 7)  # bf16 spacing
        diff = (x - y).abs()
        if float(diff.max()) > worst:
            worst, worst_name = float(diff.max()), name
        in_ulps = diff / ulp
        worst_ulp = max(worst_ulp, float(in_ulps.max()))
        differing += int((diff > 0).sum())
        over_one_ulp += int((in_ulps > 1).sum())
        total += diff.numel()
    return {
        "common_tensors": len(common),
        "only_in_alloylm": sorted(set(a) - set(b)),
        "only_in_mergekit": sorted(set(b) - set(a)),
        "dtypes": sorted({str(t.dtype) for t in a.values()} | {str(t.dtype) for t in b.values()}),
        "max_abs_diff": worst,
        "max_abs_diff_tensor": worst_name,
        "max_diff_bf16_ulps": worst_ulp,
        "differing_elements": differing,
        "elements_over_one_ulp": over_one_ulp,
        "total_elements": total,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mergekit-yaml",
        default=shutil.which("mergekit-yaml") or "/work/mergekit-venv/bin/mergekit-yaml",
        help="path of mergekit's mergekit-yaml (in its own venv)",
    )
    parser.add_argument(
        "--work-dir", default=os.environ.get("ALLOY_BENCH_DIR", "/tmp/alloylm-merge-bench")
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--methods",
        default="",
        help="also a row per merge method: 'all' or a comma-separated list (see METHOD_ROWS)",
    )
    add_force_argument(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    run = begin("merge_speed", force=args.force)

    from alloylm.models.sources import resolve_model

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    base = resolve_model(MODEL)
    # one copy per base model: a tiny --check run must not find the full-size one
    other = perturbed_copy(base, work / f"perturbed-5pct-{base.name}")
    mergekit_yaml, sweep_yaml = write_configs(work, base, other)
    for path in (base / "model.safetensors", other / "model.safetensors"):
        path.read_bytes()  # warm the page cache once so the first measured run is not penalised

    ours_cmd = [sys.executable, "-m", "alloylm.cli.merge"]
    results: dict = {
        "inputs": {"base": str(base), "other": str(other), "config": str(mergekit_yaml)},
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    results["alloylm_single"] = measure(
        [*ours_cmd, str(mergekit_yaml), str(work / "out_alloylm"), "--quiet"],
        work / "out_alloylm",
        args.repeats,
    )
    results["alloylm_sweep7"] = measure(
        [*ours_cmd, str(sweep_yaml), str(work / "out_sweep"), "--quiet"],
        work / "out_sweep",
        args.repeats,
    )
    results["sweep7_over_single"] = round(
        results["alloylm_sweep7"]["wall_s"] / results["alloylm_single"]["wall_s"], 2
    )

    if Path(args.mergekit_yaml).exists():
        results.update(
            compare_with_mergekit(
                args.mergekit_yaml, mergekit_yaml, work, [base, other], results, args.repeats
            )
        )
    else:
        results["mergekit_single"] = None
        print(
            f"mergekit-yaml not found at {args.mergekit_yaml}: comparison skipped "
            "(install mergekit in its own venv, see docs/merge.md)"
        )

    if args.methods:
        methods = list(METHOD_ROWS) if args.methods == "all" else args.methods.split(",")
        unknown = [m for m in methods if m not in METHOD_ROWS]
        if unknown:
            raise SystemExit(f"unknown methods {unknown}; known: {', '.join(METHOD_ROWS)}")
        second = perturbed_copy(base, work / f"perturbed-5pct-seed1-{base.name}", seed=1)
        parents = {"BASE": base, "A": other, "B": second}
        mergekit_bin = args.mergekit_yaml if Path(args.mergekit_yaml).exists() else None
        results["methods"] = measure_methods(methods, work, parents, mergekit_bin, args.repeats)

    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["run"] = run_record(run)  # date, load at start and end, CPU (benchmarks/_common.py)
    print_table(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **results}, indent=2
        )
        + "\n"
    )
    print(f"results: {RESULTS}")
    return 0


def compare_with_mergekit(
    mergekit_bin: str, config: Path, work: Path, parents: list[Path], ours: dict, repeats: int
) -> dict:
    """mergekit-yaml on the same config (default threads and one OpenMP thread), ratios, differences."""
    out: dict = {}
    out["mergekit_single"] = measure(
        [mergekit_bin, str(config), str(work / "out_mergekit")], work / "out_mergekit", repeats
    )
    one_thread = [*MERGEKIT_ONE_THREAD, mergekit_bin, str(config), str(work / "out_mergekit_1t")]
    out["mergekit_single_omp1"] = measure(one_thread, work / "out_mergekit_1t", repeats)
    ours_wall = ours["alloylm_single"]["wall_s"]
    out["speedup_vs_mergekit"] = round(out["mergekit_single"]["wall_s"] / ours_wall, 2)
    out["speedup_vs_mergekit_omp1"] = round(out["mergekit_single_omp1"]["wall_s"] / ours_wall, 2)
    out["memory_ratio_vs_mergekit"] = round(
        ours["alloylm_single"]["peak_rss_mib"] / out["mergekit_single"]["peak_rss_mib"], 2
    )
    out["difference"] = max_difference(work / "out_alloylm", work / "out_mergekit", parents)
    return out


def print_methods(rows: dict) -> None:
    print(
        f"\n{'method':<18}{'alloylm s':>11}{'mergekit s':>12}{'speed-up':>10}{'RSS MiB':>10}{'max bf16 ulps':>15}"
    )
    for method, row in rows.items():
        theirs = row.get("mergekit") or {}
        diff = row.get("difference") or {}
        print(
            f"{method:<18}{row['alloylm']['wall_s']:>11.2f}{theirs.get('wall_s', float('nan')):>12.2f}"
            f"{row.get('speedup_vs_mergekit', float('nan')):>10.2f}{row['alloylm']['peak_rss_mib']:>10.0f}"
            f"{diff.get('max_diff_bf16_ulps', float('nan')):>15.2f}"
        )


def print_table(results: dict) -> None:
    print(f"\n{'run':<28}{'wall s (min)':>16}{'runs':>26}{'peak RSS MiB':>14}")
    for key in ("alloylm_single", "alloylm_sweep7", "mergekit_single", "mergekit_single_omp1"):
        r = results.get(key)
        if r:
            print(
                f"{key:<28}{r['wall_s']:>16.2f}{str(r['wall_s_runs']):>26}{r['peak_rss_mib']:>14.0f}"
            )
    print(
        f"\nload average (1, 5, 15 min) at start {results['load_average_at_start']}, at end {results['load_average_at_end']} on {results['cpu_count']} CPUs"
    )
    print(f"sweep of 7 / one merge (alloylm): {results['sweep7_over_single']}x (target <= 3x)")
    if results.get("methods"):
        print_methods(results["methods"])
    if results.get("mergekit_single"):
        print(
            f"speed-up vs mergekit: {results['speedup_vs_mergekit']}x (target >= 2x); vs mergekit with OMP_NUM_THREADS=1: {results['speedup_vs_mergekit_omp1']}x"
        )
        print(
            f"peak memory alloylm / mergekit: {results['memory_ratio_vs_mergekit']} (target <= 1)"
        )
        d = results["difference"]
        print(
            f"max |alloylm - mergekit|: {d['max_abs_diff']:.3g} ({d['max_diff_bf16_ulps']:.2f} bf16 ulps, in {d['max_abs_diff_tensor']}); "
            f"{d['differing_elements']} of {d['total_elements']} elements differ; tensors only in mergekit: {d['only_in_mergekit']}"
        )


if __name__ == "__main__":
    sys.exit(main())
