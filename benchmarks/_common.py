"""What every benchmark records beside its numbers, so that a figure can be trusted or refused.

A number measured while other work shares the CPU is wrong, often by several times (issue 16:
figures measured at a load of 7-12 were 2x off). So every benchmark:

- calls `begin(name, force=args.force)` before it measures: it reads the 1, 5 and 15-minute load
  averages (`os.getloadavg()`), and when the 1-minute load is above `LOADED_FRACTION` x the CPU
  count it refuses to run (exit status 3, nothing written) unless `--force` is given;
- writes `run_record(...)` under the key "run" of its JSON: the date, the load at start and at
  end, the threshold, `loaded` (true when forced on a loaded machine, or when the load at the end
  is above the cores plus the threshold: more than the benchmark alone makes), the CPU model and
  core count, the command line.

benchmarks/summary.py publishes only figures whose "run" says `loaded: false`; a file without a
"run" record (written before this module) is listed as unverified, its numbers not published.

The 1-minute load at the start is the test, not the load at the end: a benchmark that keeps two
cores busy raises the load to about 2 by itself.

`ALLOY_BENCH_RESULTS` names another results folder (smoke runs: `make bench-check`), so that a
plumbing check never overwrites the recorded results.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOADED_FRACTION = 0.5  # a 1-minute load above half the cores means someone else is computing
REFUSED_EXIT = 3  # exit status of a benchmark that would not measure on a loaded machine


def results_dir() -> Path:
    """benchmarks/results, or the folder `ALLOY_BENCH_RESULTS` names."""
    override = os.environ.get("ALLOY_BENCH_RESULTS")
    return Path(override) if override else REPO / "benchmarks" / "results"


def add_force_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="measure even when the machine is loaded; the results are marked loaded: true "
        "and benchmarks/summary.py does not publish them",
    )


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_vector_flags() -> list[str]:
    """The CPU's vector extensions that change these numbers most (/proc/cpuinfo flags): fp32
    products use AVX2/AVX-512, bf16 autocast pays only with avx512_bf16 or amx_bf16."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return []


def load_threshold(cores: int | None = None) -> float:
    return LOADED_FRACTION * (cores or os.cpu_count() or 1)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Run:
    """The start of one benchmark run: when, how loaded, whether forced."""

    benchmark: str
    started_at: str
    load_at_start: list[float]
    threshold: float
    forced: bool
    command: list[str] = field(default_factory=list)

    @property
    def loaded(self) -> bool:
        return self.load_at_start[0] > self.threshold


def begin(benchmark: str, *, force: bool = False) -> Run:
    """Read the load before measuring; refuse (SystemExit(REFUSED_EXIT)) when the machine is
    loaded and `force` is false. Call it in the parent process only, before anything is timed."""
    run = Run(
        benchmark=benchmark,
        started_at=_now(),
        load_at_start=_load(),
        threshold=load_threshold(),
        forced=force,
        command=[Path(sys.argv[0]).name, *sys.argv[1:]],
    )
    if run.loaded:
        message = (
            f"{benchmark}: 1-minute load {run.load_at_start[0]} is above {run.threshold:g} "
            f"(half of {os.cpu_count()} cores): numbers measured now would be wrong"
        )
        if not force:
            print(f"{message}; not measuring (wait for an idle machine, or --force to "
                  "measure anyway, marked loaded: true)", file=sys.stderr)  # fmt: skip
            raise SystemExit(REFUSED_EXIT)
        print(f"{message}; measuring anyway (--force): the results are marked loaded: true "
              "and will not be published", file=sys.stderr)  # fmt: skip
    return run


def run_record(run: Run) -> dict:
    """The "run" entry of a results JSON: call it when the measurements are done.

    `loaded` is true when the 1-minute load at the start was above the threshold, or when at the
    end it is above the cores plus the threshold: more than this benchmark alone can make."""
    end = _load()
    cores = os.cpu_count() or 1
    reasons = []
    if run.loaded:
        reasons.append(f"1-minute load {run.load_at_start[0]} at start > {run.threshold:g}")
    if end[0] > cores + run.threshold:
        reasons.append(f"1-minute load {end[0]} at end > {cores + run.threshold:g}")
    return {
        "benchmark": run.benchmark,
        "date": run.started_at[:10],
        "started_at": run.started_at,
        "finished_at": _now(),
        "load_at_start": run.load_at_start,  # 1, 5, 15 minutes (os.getloadavg)
        "load_at_end": end,
        "load_threshold_1m": run.threshold,
        "loaded": bool(reasons),
        "loaded_because": reasons,
        "forced": run.forced,
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_vector_flags(),
        "cores": cores,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "command": portable_command(run.command),
    }


def portable_command(parts: list[str] | tuple[str, ...]) -> str:
    """A command as results record it: paths inside the repository relative to its root, the
    interpreter as `python`, the home folder as `~`, so that no machine's paths are published."""
    root = str(REPO) + os.sep
    home = str(Path.home())
    words = []
    for word in parts:
        text = "python" if word == sys.executable else str(word)
        text = text.replace(root, "").replace(home, "~")
        words.append(text)
    return " ".join(words)
