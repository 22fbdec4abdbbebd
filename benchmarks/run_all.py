"""`make bench`: every benchmark, one after the other, within a stated budget, then the summary.

    python benchmarks/run_all.py                # all of them, <= 30 min on 2 idle cores
    python benchmarks/run_all.py --only merge_speed eval_speed
    python benchmarks/run_all.py --check        # tiny sizes into a scratch folder: plumbing only
    python benchmarks/run_all.py --only calibration   # error rates of every verdict, not timings

Each benchmark runs in its own process with the size below, chosen to fit the budget; the
estimates are upper bounds above each script's time in the first idle `make bench` (below). Before each one the
runner waits (up to --settle seconds) for the 1-minute load to fall to half the cores: the
previous benchmark's own load takes about a minute to decay. A benchmark that still finds the
machine loaded refuses to measure (exit 3; see benchmarks/_common.py) and is listed as refused;
`--force` passes --force on (results marked loaded: true, never published). The budget is hard:
a benchmark is not started when fewer seconds are left than its estimate, and is stopped at its
timeout or at the end of the budget, whichever comes first; skipped and stopped ones are listed.
What happened is written to `_make_bench.json` in the results folder, and benchmarks/summary.py
prints the table (SUMMARY.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import REFUSED_EXIT, load_threshold, portable_command, results_dir  # noqa: E402

REPO = HERE.parent
BUDGET_S = 30 * 60
MERGEKIT = REPO / ".ci-venvs" / "mergekit" / "bin" / "mergekit-yaml"  # .ci/side-venvs.sh
LM_EVAL = Path(sys.executable).parent / "lm_eval"  # the `lm-eval` extra, in the project's venv


CALIBRATION_ESTIMATE_S = 1500  # fits the default budget when run alone (--only calibration)
CALIBRATION_TIMEOUT_S = 3600
CALIBRATION_BASIS = (
    "not measured idle: on 2026-12-08 at a load of 8-13 on 2 cores the cases took 998 s "
    "(accuracy and perplexity) + 262 s (Bradley-Terry) in two processes"
)


@dataclass(frozen=True)
class Plan:
    name: str
    args: tuple[str, ...]
    estimate_s: int  # upper bound, from the script's recorded results (see `basis`)
    timeout_s: int
    basis: str
    check_args: tuple[str, ...] = ()
    check_env: tuple[tuple[str, str], ...] = ()


TINY = (("ALLOY_BENCH_MODEL", "tiny:llama"),)
# Most important first: a slow machine loses the serving benchmarks at the end, not training.
# Sum of the estimates: 1,785 s, plus up to 60 s of waiting for an idle CPU before each. The
# first idle run (2026-12-02, 2 cores) took 20 min 22 s with its waits: train 214 s, eval 290 s,
# merge 103 s, preference 309 s, distill 16 s, serve_speed 84 s, serve_load 28 s; the second
# (same day, 5 train contenders, bf16 eval rows, a CPU with AVX512-BF16) 20 min 20 s: train 249 s,
# eval 331 s, merge 62 s, preference 274 s, distill 11 s, serve_speed 50 s, chat_speed 46 s,
# serve_load 27 s.
PLANS = (
    Plan("train_throughput", ("--steps", "3"), 420, 960,
         "2026-12-02 probe, idle: 3 steps of the plain fp32 loop ~60 s, the stage in bf16 ~30 s, "
         "in fp32 ~70 s, the plain loop in bf16 ~40 s, LoRA ~45 s (twice: with and without "
         "dropout), each plus ~20 s of loading",
         ("--steps", "2"), TINY),
    Plan("eval_speed", ("--repeats", "3", "--lm-eval", str(LM_EVAL)), 540, 720,
         "2026-12-07 13:20 idle run, paper once: 3 x (47.6 + 26.5 + 32.6 + 17.4) + 42.5 s = "
         "415 s; paper in every repeat since: + 2 x ~45 s",
         ("--repeats", "2", "--skip-paper", "--lm-eval", "/nonexistent"), TINY),
    Plan("merge_speed", ("--repeats", "3", "--mergekit-yaml", str(MERGEKIT)), 180, 480,
         "2026-12-07 16:11 idle run, 2 repeats: 2 x (2.7 + 6.2 + 8.4 + 9.0) s plus making the "
         "inputs; 3 repeats since (a median of 2 is their mean: the sweep's runs were 7.3 and "
         "5.1 s)",
         ("--repeats", "2", "--mergekit-yaml", "/nonexistent"), TINY),
    Plan("preference_throughput", ("--pairs", "8", "--repeats", "2"), 360, 540,
         "recorded at 32 pairs (8 steps): 87-123 s a round at load ~2; 8 pairs (2 steps) keep "
         "the fixed costs (~40 s) and a quarter of the epoch: ~45 s x 4 rounds x 2 repeats",
         ("--pairs", "4", "--repeats", "2", "--only", "alloy_dpo"), TINY),
    Plan("distill_throughput", ("--chunks", "24"), 60, 180,
         "recorded: 20 s of first runs at concurrency 1/4/8 plus reruns (tiny:llama, load 6.6)",
         ("--chunks", "4", "--max-tokens", "8")),
    Plan("serve_speed", ("--max-tokens", "64"), 120, 240,
         "no recorded run: 18 requests of <= 150 tokens on the embedded model",
         ("--model", "tiny:llama", "--max-tokens", "4", "--long-tokens", "8")),
    Plan("chat_speed", ("--turns", "4", "--max-new-tokens", "96"), 120, 300,
         "no recorded run: 2 chats (1 and 2 models) of 4 turns of <= 96 tokens, plus model loading",
         ("--check",)),
    Plan("serve_load", ("--seconds", "20"), 45, 120,
         "20 s of load + 10 s warm-up + server start (its default is 60 s)",
         ("--clients", "4", "--seconds", "3", "--warmup", "1")),
    # before calibration: it needs more than the 30-minute budget leaves it (`--only merge_scale`), and disk
    # (the script skips a size, or the sweep, that would not fit the free space and says so)
    Plan("merge_scale", ("--mergekit-yaml", str(MERGEKIT)), 1800, 3600,
         "no recorded run: builds 1B, 3B and 8B random pairs once (50 GB cache), 2 merges a size, "
         "a 7-schedule sweep at 8B",
         ("--check", "--mergekit-yaml", "/nonexistent")),
    # error rates, not timings (issue 23): valid on a loaded machine too, so last, and the only
    # one that does not refuse a loaded CPU; run it alone with --only calibration
    Plan("calibration", (), CALIBRATION_ESTIMATE_S, CALIBRATION_TIMEOUT_S, CALIBRATION_BASIS,
         ("--check",)),
)  # fmt: skip


def wait_until_idle(limit_s: float) -> tuple[float, list[float]]:
    """Seconds waited for the 1-minute load to reach the threshold (at most `limit_s`)."""
    started = time.monotonic()
    while os.getloadavg()[0] > load_threshold() and time.monotonic() - started < limit_s:
        time.sleep(5)
    return round(time.monotonic() - started, 1), [round(x, 2) for x in os.getloadavg()]


def run_one(plan: Plan, args: argparse.Namespace, env: dict[str, str], seconds: float) -> dict:
    command = [sys.executable, str(HERE / f"{plan.name}.py")]
    command += list(plan.check_args if args.check else plan.args)
    if args.force or args.check:
        command.append("--force")
    entry: dict = {"benchmark": plan.name, "command": portable_command(command[1:])}
    started = time.monotonic()
    try:
        done = subprocess.run(command, env={**env, **dict(plan.check_env if args.check else ())},
                              timeout=seconds, check=False)  # fmt: skip
        rc = done.returncode
        entry["outcome"] = (
            "measured" if rc == 0 else "refused: machine loaded" if rc == REFUSED_EXIT
            else f"failed (exit {rc})"
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        entry["outcome"] = f"stopped at its timeout ({seconds:.0f} s)"
    entry["seconds"] = round(time.monotonic() - started, 1)
    return entry


def record_name(only: list[str] | None) -> str:
    """The runner's record: `_make_bench.json` for a whole run, another file for `--only`."""
    return "_make_bench_only.json" if only else "_make_bench.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    names = [plan.name for plan in PLANS]
    parser.add_argument("--only", nargs="*", choices=names, help="run only these")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for everything")
    parser.add_argument("--settle", type=float, default=60, help="longest wait for an idle CPU")
    parser.add_argument("--force", action="store_true", help="pass --force to every benchmark")
    parser.add_argument("--check", action="store_true",
                        help="tiny sizes, results in a scratch folder (or ALLOY_BENCH_RESULTS)")  # fmt: skip
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.check and "ALLOY_BENCH_RESULTS" not in env:
        env["ALLOY_BENCH_RESULTS"] = tempfile.mkdtemp(prefix="bench-check-")
    folder = Path(env.get("ALLOY_BENCH_RESULTS") or results_dir())
    folder.mkdir(parents=True, exist_ok=True)
    plans = [plan for plan in PLANS if not args.only or plan.name in args.only]
    deadline = time.monotonic() + args.budget
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    log: list[dict] = []
    for plan in plans:
        left = deadline - time.monotonic()
        if not args.check and left < plan.estimate_s:
            log.append({"benchmark": plan.name, "outcome": f"skipped: {left:.0f} s of the budget "
                        f"left, it needs up to {plan.estimate_s} s"})  # fmt: skip
            continue
        settle = 0.0 if args.check else min(args.settle, max(0.0, left - plan.estimate_s))
        waited, load = wait_until_idle(settle)  # --check measures nothing: no need to wait
        print(f"== {plan.name} (load {load}, waited {waited} s)", flush=True)
        entry = run_one(plan, args, env, min(plan.timeout_s, deadline - time.monotonic()))
        entry.update(waited_for_idle_s=waited, load_before=load, estimate_s=plan.estimate_s,
                     estimate_basis=plan.basis)  # fmt: skip
        log.append(entry)
        print(f"== {plan.name}: {entry['outcome']}", flush=True)
    record = {
        "budget_s": args.budget,
        "check": args.check,
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "benchmarks": log,
    }
    if args.only:  # the record of the last full run (its duration, every outcome) stays
        record["only"] = args.only
    (folder / record_name(args.only)).write_text(json.dumps(record, indent=2) + "\n")
    from summary import main as summary_main

    summary_main([str(folder)])
    return 0 if all(e["outcome"] == "measured" for e in log) else 1


if __name__ == "__main__":
    raise SystemExit(main())
