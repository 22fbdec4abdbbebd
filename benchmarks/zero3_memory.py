"""Per-rank peak memory of DDP against DeepSpeed ZeRO-3 on CPU ranks (torchrun, gloo).

The same sft stage (the embedded SmolLM2-135M-Instruct, full fine-tuning, fp32, a few steps) runs
twice on N ranks through alloylm's own distributed path:

    alloy run p.yaml --launcher torchrun --num-processes N                              # DDP
    alloy run p.yaml --launcher torchrun --num-processes N --config-file deepspeed_zero3

Each rank records its peak RSS (ru_maxrss) and the parameter elements it holds after loading in
its marker (<state>/ranks/rank-K.json); this prints them side by side with the ratio, and writes
benchmarks/results/zero3_memory.json. ZeRO-3 partitions parameters, gradients and Adam's two
moments over the ranks; each rank's RSS still carries the Python, torch and DeepSpeed runtime,
the data, and the activations of its own micro-batch, which do not shrink.

    python benchmarks/zero3_memory.py                 # the embedded model, 2 ranks, 3 steps
    python benchmarks/zero3_memory.py --model tiny:llama --steps 2   # plumbing check (seconds)

Needs the deepspeed extra. Refuses to measure on a loaded machine (see _common.begin) unless
--force, which marks the result loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_force_argument, begin, results_dir, run_record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_once(
    folder: Path, model: str, steps: int, processes: int, config_file: str | None
) -> list[dict]:
    from alloylm.pipeline.launch import rank_markers
    from alloylm.resources import data_root

    qa = data_root() / "openstax_sft" / "anatomy_physiology_2e_exercises_qa.jsonl"
    stage = {"kind": "sft", "model": model, "data": [{"path": str(qa), "limit": 64}],
             "train": {"max_steps": steps, "max_seq_length": 256, "per_device_batch_size": 2,
                       "dtype": "float32", "save_steps": 1000, "learning_rate": 1e-5}}  # fmt: skip
    recipe = {"run": {"name": "zero3-memory", "output": "out", "seed": 0}, "stages": {"s": stage}}
    (folder / "p.yaml").write_text(yaml.safe_dump(recipe))
    command = [sys.executable, "-m", "alloylm.cli.main", "run", "p.yaml", "--launcher", "torchrun",
               "--num-processes", str(processes)]  # fmt: skip
    if config_file:
        command += ["--config-file", config_file]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    return rank_markers(folder / "out" / ".alloy" / "state" / "s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    add_force_argument(parser)
    args = parser.parse_args()
    run = begin("zero3_memory", force=args.force)
    rows = {}
    for name, config_file in (("ddp", None), ("zero3", "deepspeed_zero3")):
        with tempfile.TemporaryDirectory(prefix=f"alloy-{name}-") as folder:
            rows[name] = run_once(Path(folder), args.model, args.steps, args.processes, config_file)
    print(f"{'rank':>4}  {'DDP peak RSS MiB':>17}  {'ZeRO-3 peak RSS MiB':>20}  {'ratio':>6}  "
          f"{'ZeRO-3 params held':>18}")  # fmt: skip
    for ddp, zero3 in zip(rows["ddp"], rows["zero3"], strict=True):
        ratio = zero3["peak_rss_mb"] / ddp["peak_rss_mb"]
        held = zero3.get("parameter_elements_held", 0) / max(zero3.get("total_parameters") or 1, 1)
        print(f"{ddp['rank']:>4}  {ddp['peak_rss_mb']:>17.1f}  {zero3['peak_rss_mb']:>20.1f}  "
              f"{ratio:>6.2f}  {held:>17.1%}")  # fmt: skip
    record = {"model": args.model, "steps": args.steps, "processes": args.processes,
              "ranks": rows, "run": run_record(run)}  # fmt: skip
    out = results_dir() / "zero3_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
