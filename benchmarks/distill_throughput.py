"""Distillation throughput against a loopback `alloy serve`: chunks/s at concurrency 1, 4, 8,
and the time of an unchanged rerun (all calls cached; must be < 5% of the first run).

    python benchmarks/distill_throughput.py [--model tiny:llama] [--chunks 24] [--max-tokens 48] [--threads 1]

Prints a table and writes benchmarks/results/distill_throughput.json. The peer for the ratios is
the same distillation at concurrency 1, measured in the same script on the same server.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from alloylm.atomic import atomic_write_json
from alloylm.chat.serve import start_server
from alloylm.distill.engine import run_distill
from alloylm.models.sources import resolve_model
from alloylm.resources import data_root
from alloylm.stages.distill import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_force_argument, begin, results_dir, run_record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def config(url: str, model: str, chunks: int, max_tokens: int, concurrency: int) -> Config:
    return Config(
        kind="distill",
        paths=[str(data_root() / "openstax_corpus" / "anatomy_physiology_2e.jsonl")],
        max_documents=8,
        max_chunks=chunks,
        raw_text=False,
        chunking={"max_tokens": 128, "overlap": 16},
        teacher={
            "type": "openai",
            "base_url": url,
            "model": model,
            "max_tokens": max_tokens,
            "concurrency": concurrency,
        },
        generators=["summary"],
        parse_retries=0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny:llama")
    parser.add_argument("--chunks", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument(
        "--threads", type=int, default=1, help="server torch threads (1: robust on a busy CPU)"
    )
    add_force_argument(parser)
    args = parser.parse_args()
    run = begin("distill_throughput", force=args.force)
    server, _ = start_server(
        resolve_model(args.model), model_name=args.model, max_batch=8, threads=args.threads
    )
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    try:
        # Warm-up (model, tokenizer and HTTP paths), not timed.
        run_distill(
            config(url, args.model, 2, args.max_tokens, 1),
            scratch / "warm",
            scratch / "warm-state",
            log=lambda m: None,
        )
        for concurrency in (1, 4, 8):
            cfg = config(url, args.model, args.chunks, args.max_tokens, concurrency)
            state = scratch / f"state-{concurrency}"
            started = time.perf_counter()
            stats = run_distill(
                cfg, scratch / f"out-{concurrency}", state, log=lambda m: None
            ).stats
            first = time.perf_counter() - started
            started = time.perf_counter()
            again = run_distill(
                cfg, scratch / f"again-{concurrency}", state, log=lambda m: None
            ).stats
            rerun = time.perf_counter() - started
            assert again["teacher"]["calls_made"] == 0, "unchanged rerun made teacher calls"
            rows.append(
                {
                    "concurrency": concurrency,
                    "chunks": stats["chunks"],
                    "calls": stats["teacher"]["calls_made"],
                    "completion_tokens": stats["teacher"]["completion_tokens"],
                    "seconds": round(first, 3),
                    "chunks_per_s": round(stats["chunks"] / first, 3),
                    "rerun_seconds": round(rerun, 3),
                    "rerun_fraction": round(rerun / first, 4),
                    "rerun_calls": again["teacher"]["calls_made"],
                }
            )
    finally:
        server.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    base = rows[0]["chunks_per_s"]
    for row in rows:
        row["speedup_vs_c1"] = round(row["chunks_per_s"] / base, 2)
    print(
        f"distill throughput: {args.model} served on loopback, summary generator, max_tokens={args.max_tokens}"
    )
    print(
        f"{'conc':>4} {'chunks':>6} {'calls':>5} {'first s':>8} {'chunks/s':>9} {'x c=1':>6} {'rerun s':>8} {'rerun %':>8}"
    )
    for r in rows:
        print(
            f"{r['concurrency']:>4} {r['chunks']:>6} {r['calls']:>5} {r['seconds']:>8.2f} {r['chunks_per_s']:>9.2f} "
            f"{r['speedup_vs_c1']:>6.2f} {r['rerun_seconds']:>8.3f} {100 * r['rerun_fraction']:>7.2f}%"
        )
    result = {
        "benchmark": "distill_throughput",
        "model": args.model,
        "max_tokens": args.max_tokens,
        "server_threads": args.threads,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "rows": rows,
        "rerun_under_5_percent": all(r["rerun_fraction"] < 0.05 for r in rows),
        "run": run_record(run),  # date, load at start and end, CPU (benchmarks/_common.py)
    }
    atomic_write_json(results_dir() / "distill_throughput.json", result)


if __name__ == "__main__":
    main()
