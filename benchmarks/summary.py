"""One table of every recorded benchmark: each figure, its peer, the ratio, the spread over
repeats, the load, the date, the CPU. Reads benchmarks/results/*.json (or the folder given),
prints the table and writes SUMMARY.md beside the results.

    python benchmarks/summary.py [RESULTS_FOLDER]

A figure is published only when its file has a "run" record (benchmarks/_common.py) that says
the machine was idle (`loaded: false`). A file whose run was loaded (forced with --force, or an
older file whose recorded load at the start was above half the cores) is listed with its load
and "loaded: not published"; a file with no load record at the start is "unverified" and its
numbers are not published either. Nothing is measured here.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_threshold, results_dir  # noqa: E402


@dataclass
class Figure:
    """One measured figure against its peer. `ratio` > 1 means ours is better (faster, more per
    second, less memory), as `meaning` spells out."""

    name: str
    value: float | None
    unit: str
    peer: str = ""
    peer_value: float | None = None
    ratio: float | None = None
    meaning: str = ""
    spread: float | None = None  # (max - min) / median of our repeats


@dataclass
class Status:
    published: bool
    label: str  # published / loaded: not published / unverified: ...
    date: str
    load_at_start: list[float] | None
    load_at_end: list[float] | None
    cpu: str
    cores: int | None


def spread(values: list[float] | None) -> float | None:
    """(max - min) / median: how far repeats of one figure scatter (None below 2 repeats)."""
    if not values or len(values) < 2:
        return None
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _cpu(run: dict) -> str:
    flags = run.get("cpu_flags")
    bf16 = (
        ""
        if flags is None
        else (" with bf16" if {"avx512_bf16", "amx_bf16"} & set(flags) else " without bf16")
    )
    return run.get("cpu_model", "?") + bf16


def status_of(data: dict) -> Status:
    """Whether a results file may be published, from its "run" record (or an older file's own
    load fields: the load at the start decides; without it the file is unverified)."""
    run = data.get("run")
    machine = data.get("machine") or {}
    if run:
        label = "published"
        if run.get("loaded"):
            label = "loaded: not published (" + "; ".join(run.get("loaded_because") or []) + ")"
        return Status(not run.get("loaded"), label, run.get("date", "?"), run.get("load_at_start"),
                      run.get("load_at_end"), _cpu(run), run.get("cores"))  # fmt: skip
    cores = data.get("cpu_count") or machine.get("cpus")
    date = str(data.get("created") or data.get("measured_at") or "")[:10]
    start = data.get("load_average_at_start")
    end = data.get("load_average_at_end")
    for key in ("load_avg_1m", "load_avg_1m_at_end", "load_avg_after"):
        if end is None and machine.get(key) is not None:
            value = machine[key]
            end = list(value) if isinstance(value, list) else [value]
    rows = data.get("results")
    if end is None and isinstance(rows, dict):  # train_throughput: each contender's, at its end
        ends = [
            r["load_avg_1m"] for r in rows.values() if isinstance(r, dict) and "load_avg_1m" in r
        ]
        end = [max(ends)] if ends else None
    start = [round(x, 2) for x in start] if start else None
    end = [round(x, 2) for x in end] if end else None
    threshold = load_threshold(cores)
    if start is not None and start[0] > threshold:
        reason = f"1-minute load {start[0]} at start"
    elif end is not None and end[0] > (cores or 1) + threshold:
        reason = f"1-minute load {end[0]} at end"
    else:
        return Status(False, "unverified: no load record at the start, not published",
                      date or "?", start, end, "?", cores)  # fmt: skip
    return Status(False, f"loaded: not published ({reason})", date or "?", start, end, "?", cores)


# ------------------------------------------------------------------ one reader per benchmark
def train_throughput(data: dict) -> Iterator[Figure]:
    results = data["results"]
    plain = results["plain_pytorch"]
    for name, row in results.items():
        if name == "plain_pytorch" or row.get("tokens_per_s") is None:
            continue
        precision = f", {row['dtype']}" if row.get("dtype") else ""
        yield Figure(f"{name} tokens/s (steady state{precision})", row["tokens_per_s"], "tokens/s",
                     f"plain PyTorch AdamW loop, {plain.get('dtype', 'float32')}",
                     plain["tokens_per_s"],
                     _ratio(row["tokens_per_s"], plain["tokens_per_s"]), "x the peer's tokens/s",
                     spread(row.get("tokens_per_s_runs")))  # fmt: skip
    full = results.get("alloylm_cpt")
    variants = {"alloylm_cpt_lora_r16": "LoRA r16 all-linear",
                "alloylm_cpt_lora_r16_dropout": "LoRA r16 all-linear, dropout 0.05"}  # fmt: skip
    for name, label in variants.items():
        lora = results.get(name)
        if lora and full and lora.get("tokens_per_s") and full.get("tokens_per_s"):
            yield Figure(f"{label} tokens/s (steady state)", lora["tokens_per_s"],
                         "tokens/s", "full fine-tuning (cpt stage)", full["tokens_per_s"],
                         _ratio(lora["tokens_per_s"], full["tokens_per_s"]), "x full fine-tuning")  # fmt: skip


PREFERENCE_ROUNDS = (
    ("alloy_dpo", "trl_dpo"),
    ("alloy_dpo_precompute_first", "trl_dpo_precompute"),
    ("alloy_orpo", "trl_orpo"),
    ("alloy_dpo_precompute_cached", "alloy_dpo_online"),
)


def preference_throughput(data: dict) -> Iterator[Figure]:
    results = data["results"]
    for ours, peer in PREFERENCE_ROUNDS:
        if ours in results and peer in results:
            a, b = results[ours]["pairs_per_cpu_s"], results[peer]["pairs_per_cpu_s"]
            yield Figure(f"{ours} pairs/CPU-s (median)", a, "pairs/CPU-s", peer, b, _ratio(a, b),
                         "x the peer's pairs/CPU-s",
                         spread(results[ours].get("pairs_per_cpu_s_runs")))  # fmt: skip
    first, online = results.get("alloy_dpo_precompute_first"), results.get("alloy_dpo_online")
    if first and online:  # the epoch alone: its reference log-probs were scored before it
        a, b = first["pairs_per_cpu_s"], online["pairs_per_cpu_s"]
        yield Figure("alloy_dpo_precompute_first pairs/CPU-s of the epoch (median)", a, "pairs/CPU-s",
                     "alloy_dpo_online", b, _ratio(a, b), "x the online reference's pairs/CPU-s")  # fmt: skip
    if first and online and first.get("pairs_per_cpu_s_with_ref"):  # issue 16's target: >= 1.3x
        a, b = first["pairs_per_cpu_s_with_ref"], online["pairs_per_cpu_s"]
        yield Figure("alloy_dpo_precompute_first pairs/CPU-s, reference pass + epoch (median)", a,
                     "pairs/CPU-s", "alloy_dpo_online", b, _ratio(a, b),
                     "x the online reference's pairs/CPU-s")  # fmt: skip


def _merge_seconds(row: dict) -> float:
    return row.get("wall_s_median", row["wall_s"])


def merge_speed(data: dict) -> Iterator[Figure]:
    ours = data["alloylm_single"]
    peer = data.get("mergekit_single")
    seconds = _merge_seconds(ours)
    if peer:
        yield Figure("SLERP merge, whole process (median s)", seconds, "s", "mergekit-yaml",
                     _merge_seconds(peer), _ratio(_merge_seconds(peer), seconds),
                     "x faster than the peer", spread(ours.get("wall_s_runs")))  # fmt: skip
        yield Figure("SLERP merge peak RSS", ours["peak_rss_mib"], "MiB", "mergekit-yaml",
                     peer["peak_rss_mib"], _ratio(peer["peak_rss_mib"], ours["peak_rss_mib"]),
                     "x less memory than the peer")  # fmt: skip
    else:
        yield Figure("SLERP merge, whole process (median s)", seconds, "s", "(mergekit not run)",
                     spread=spread(ours.get("wall_s_runs")))  # fmt: skip
    sweep = data["alloylm_sweep7"]
    yield Figure("sweep of 7 schedules (median s)", _merge_seconds(sweep), "s", "one merge",
                 seconds, _ratio(_merge_seconds(sweep), seconds), "x one merge's time",
                 spread(sweep.get("wall_s_runs")))  # fmt: skip


def eval_speed(data: dict) -> Iterator[Figure]:
    rows = data["rows"]
    ours = rows["alloylm loglik"]
    peer = rows.get("lm-eval loglik")
    qps = ours["questions_per_s"]
    yield Figure("loglik questions/s, whole process (median)", qps, "questions/s",
                 "lm-eval" if peer else "(lm-eval not run)", peer and peer["questions_per_s"],
                 _ratio(qps, peer and peer["questions_per_s"]), "x the peer's questions/s",
                 spread(ours.get("runs_seconds")))  # fmt: skip
    ours_bf16, peer_bf16 = rows.get("alloylm loglik bf16"), rows.get("lm-eval loglik bf16")
    if ours_bf16:
        bf16 = data.get("comparison", {}).get("bf16", {})
        moved = data.get("comparison", {}).get("bf16_answers_differing_from_fp32")
        qps_bf16 = ours_bf16["questions_per_s"]
        yield Figure("loglik in bf16, questions/s, whole process (median)", qps_bf16, "questions/s",
                     "lm-eval bf16" if peer_bf16 else "(lm-eval not run)",
                     peer_bf16 and peer_bf16["questions_per_s"],
                     _ratio(qps_bf16, peer_bf16 and peer_bf16["questions_per_s"]),
                     f"x the peer's questions/s; {bf16.get('questions_answered_differently', '?')} "
                     f"answers differ from it, {moved} from our fp32",
                     spread(ours_bf16.get("runs_seconds")))  # fmt: skip
        if peer:
            yield Figure("loglik in bf16 against lm-eval fp32, questions/s", qps_bf16,
                         "questions/s", "lm-eval fp32", peer["questions_per_s"],
                         _ratio(qps_bf16, peer["questions_per_s"]), "x the peer's questions/s")  # fmt: skip
    paper = rows.get("alloylm paper")
    if paper:
        yield Figure("paper protocol, whole process (median s)", paper["seconds"], "s",
                     "alloylm loglik", ours["seconds"], _ratio(paper["seconds"], ours["seconds"]),
                     "x loglik's time", spread(paper.get("runs_seconds")))  # fmt: skip


def distill_throughput(data: dict) -> Iterator[Figure]:
    rows = {row["concurrency"]: row for row in data["rows"]}
    single = rows.get(1)
    for concurrency, row in sorted(rows.items()):
        if concurrency == 1 or single is None:
            continue
        yield Figure(f"chunks/s at concurrency {concurrency}", row["chunks_per_s"], "chunks/s",
                     "concurrency 1", single["chunks_per_s"],
                     _ratio(row["chunks_per_s"], single["chunks_per_s"]), "x concurrency 1")  # fmt: skip
    worst = max(row["rerun_fraction"] for row in rows.values())
    yield Figure("unchanged rerun / first run (worst)", worst, "fraction", meaning="target < 0.05")


def serve_speed(data: dict) -> Iterator[Figure]:
    rows = {row["clients"]: row for row in data["rows"]}
    yield Figure("8 requests at once (s)", data["concurrent_8_s"], "s", "one after another",
                 data["sequential_8_s"], _ratio(data["sequential_8_s"], data["concurrent_8_s"]),
                 "x faster than one after another")  # fmt: skip
    if 1 in rows and 8 in rows:
        a, b = rows[8]["aggregate_tokens_per_s"], rows[1]["aggregate_tokens_per_s"]
        yield Figure("tokens/s, 8 streaming clients", a, "tokens/s", "1 client", b, _ratio(a, b),
                     "x one client's tokens/s")  # fmt: skip
    for clients in (1, 8):
        if clients in rows:
            row = rows[clients]
            yield Figure(f"time to first token, {clients} client{'s' if clients > 1 else ''} "
                         "(median s)", row["ttft_median_s"], "s", "max", row["ttft_max_s"])  # fmt: skip
            yield Figure(f"tokens/s per client, {clients} client{'s' if clients > 1 else ''}",
                         row.get("per_client_tokens_per_s"), "tokens/s")  # fmt: skip
    hol = data.get("head_of_line")
    if hol:
        yield Figure("1-token request behind a long one (s)", hol["short_behind_long_s"], "s",
                     "alone", hol["short_alone_s"],
                     _ratio(hol["short_behind_long_s"], hol["short_alone_s"]), "x alone's time")  # fmt: skip


def serve_load(data: dict) -> Iterator[Figure]:
    summary = data["summary"]
    yield Figure(f"requests/s, {data.get('clients')} clients", summary["requests_per_s"], "req/s")
    yield Figure("latency p50 / p99 (s)", summary["latency_p50_s"], "s", "p99",
                 summary["latency_p99_s"])  # fmt: skip
    yield Figure("RSS growth after warm-up", summary.get("rss_growth_after_warmup_mb"), "MB")


def chat_speed(data: dict) -> Iterator[Figure]:
    for row in data["rows"]:
        side = "1 model" if row["models"] == 1 else f"{row['models']} models side by side"
        terminal = row.get("terminal_first_byte_median_s")
        yield Figure(f"alloy chat time to first token, {side} (median s)",
                     row["first_token_median_s"], "s", "on the terminal" if terminal else "",
                     terminal)  # fmt: skip
        yield Figure(f"alloy chat tokens/s, {side} (median)", row["tokens_per_s_median"],
                     "tokens/s")  # fmt: skip


READERS: dict[str, Callable[[dict], Iterator[Figure]]] = {
    "train_throughput": train_throughput,
    "preference_throughput": preference_throughput,
    "merge_speed": merge_speed,
    "eval_speed": eval_speed,
    "distill_throughput": distill_throughput,
    "serve_speed": serve_speed,
    "serve_load": serve_load,
    "chat_speed": chat_speed,
}


def figures_of(name: str, data: dict) -> tuple[list[Figure], str | None]:
    """The figures of one results file, or an explanation when its layout is not known."""
    reader = READERS.get(name)
    if reader is None:
        return [], f"no reader for {name} in benchmarks/summary.py"
    try:
        return list(reader(data)), None
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
        return [], f"layout not understood ({type(error).__name__}: {error})"


# ------------------------------------------------------------------ the table
def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _load(values: list[float] | None) -> str:
    return "/".join(f"{v:g}" for v in values) if values else "-"


def rows_for(folder: Path) -> list[list[str]]:
    out = []
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("_"):  # the runner's own record (_make_bench.json)
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            out.append([path.stem, f"unreadable ({error})", *["-"] * 7, "not published"])
            continue
        if isinstance(data, dict) and data.get("timing") is False:
            continue  # error rates, not timings (calibration.json): not a figure of this table
        status = status_of(data)
        figures, problem = figures_of(path.stem, data)
        machine = f"{status.cpu}, {status.cores or '?'} cores"
        where = [_load(status.load_at_start), _load(status.load_at_end), status.date, machine]
        if problem:
            out.append([path.stem, problem, "-", "-", "-", "-", *where, "not published"])
            continue
        for figure in figures:
            if status.published:
                value = f"{_number(figure.value)} {figure.unit}"
                peer = figure.peer or "-"
                if figure.peer and figure.peer_value is not None:
                    peer = f"{figure.peer} {_number(figure.peer_value)}"
                ratio = f"{figure.ratio:.2f} {figure.meaning}" if figure.ratio else "-"
                if figure.ratio is None and not figure.peer and figure.meaning:
                    ratio = figure.meaning  # a target, not a ratio
                scatter = f"{100 * figure.spread:.0f}%" if figure.spread is not None else "-"
            else:
                value, peer, ratio, scatter = "-", figure.peer or "-", "-", "-"
            out.append([path.stem, figure.name, value, peer, ratio, scatter, *where, status.label])  # fmt: skip
    return out


HEADER = ["benchmark", "figure", "value", "peer", "ratio", "spread over repeats",
          "load at start (1/5/15 min)", "load at end", "date", "CPU", "status"]  # fmt: skip


def markdown(rows: list[list[str]], folder: Path) -> str:
    lines = [
        "# Benchmark summary",
        "",
        f"Written by `python benchmarks/summary.py` from `{folder.name}/*.json` (`make bench` runs "
        "every benchmark, then this). A figure is shown only when its run's 1-minute load at the "
        f"start was at most half the cores (threshold {load_threshold():g} here) and at the end "
        "at most the cores plus that; otherwise its row says why it is not published. spread = "
        "(max - min) / median over the repeats of our figure (or of its time).",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    lines += last_make_bench(folder)
    lines += last_make_bench(folder, "_make_bench_only.json")
    return "\n".join(lines) + "\n"


def last_make_bench(folder: Path, name: str = "_make_bench.json") -> list[str]:
    """What the last `make bench` (benchmarks/run_all.py) did with each benchmark; with
    name="_make_bench_only.json", the last `run_all.py --only ...`."""
    path = folder / name
    if not path.exists():
        return []
    record = json.loads(path.read_text())
    kind = "make bench-check (tiny sizes)" if record.get("check") else "make bench"
    if record.get("only"):
        kind = f"run_all.py --only {' '.join(record['only'])}"
    lines = ["", f"Last {kind}: started {record.get('started', '?')}, budget "
             f"{record.get('budget_s', 0):.0f} s.", "", "| benchmark | outcome | command |",
             "|---|---|---|"]  # fmt: skip
    for entry in record.get("benchmarks", []):
        lines.append(
            f"| {entry['benchmark']} | {entry['outcome']} | `{entry.get('command', '')}` |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0]) if args else results_dir()
    rows = rows_for(folder)
    text = markdown(rows, folder)
    (folder / "SUMMARY.md").write_text(text)
    print(text, end="")
    print(f"written {folder / 'SUMMARY.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
