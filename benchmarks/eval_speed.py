"""Questions/s of `loglik` scoring: alloylm vs lm-evaluation-harness, whole process against whole process.

Same model folder (the embedded SmolLM2-135M-Instruct), same questions (MMLU college_biology test,
144), same prompt (lm-eval's MMLU default: description line, "{question}\\nA. ...\\nD. ...\\nAnswer:",
letters " A".." D" as choices, 0-shot, no chat template: alloylm's `--template plain`), same batch
size. lm-eval reads the CSV through a task YAML with its mmlu `_default_template_yaml` prompt
(alloylm.evals.lm_eval_adapter.mcq_task_yaml) and the local file as dataset. Also times alloylm's `paper` protocol (generation) on the same file.

    python benchmarks/eval_speed.py [--lm-eval /work/lmeval-venv/bin/lm_eval] [--batch-size 8] [--repeats 3]

Prints a table and writes benchmarks/results/eval_speed.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_force_argument, begin, results_dir, run_record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = os.environ.get("ALLOY_BENCH_MODEL", "embedded:smollm2-135m-instruct")  # tiny: smoke run
DEFAULT_TASK = "mmlu_stem/college_biology_test.csv"
LM_EVAL_TASK = "alloy_bench_mmlu_college_biology"
# lm-eval 0.4.13 lm_eval/tasks/mmlu/default/_default_template_yaml + mmlu_college_biology.yaml,
# with the hub dataset replaced by the local file.


def timed(command: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "w") as handle:
        result = subprocess.run(
            command, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False
        )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(
            f"{command[0]} failed ({result.returncode}); see {log}:\n{log.read_text()[-3000:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def lm_eval_scoring_seconds(log: Path, finished: float) -> float | None:
    """From lm-eval's own log: time from 'Running loglikelihood requests' to the process end."""
    match = re.search(
        r"(\d{4}-\d{2}-\d{2}:\d{2}:\d{2}:\d{2}) INFO .*Running loglikelihood requests",
        log.read_text(),
    )
    if not match:
        return None
    started = (
        datetime.strptime(match.group(1), "%Y-%m-%d:%H:%M:%S")
        .replace(tzinfo=timezone.utc)
        .timestamp()
    )
    return round(finished - started, 1)


def run_lm_eval(
    lm_eval: str,
    model: Path,
    csv_path: Path,
    work: Path,
    batch_size: int,
    env: dict[str, str],
    dtype: str = "float32",
) -> dict:
    data = work / "college_biology.jsonl"
    with open(csv_path, newline="", encoding="utf-8") as handle, open(data, "w") as out:
        for row in csv.reader(handle):  # the cais/mmlu fields: question, choices, answer (index)
            out.write(
                json.dumps(
                    {
                        "question": row[0],
                        "choices": row[1:5],
                        "answer": "ABCD".index(row[5].strip()),
                    }
                )
                + "\n"
            )
    from alloylm.evals.lm_eval_adapter import mcq_task_yaml

    tasks = work / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / f"{LM_EVAL_TASK}.yaml").write_text(
        mcq_task_yaml(LM_EVAL_TASK, data, subject="college biology")
    )
    out_dir = work / f"lm_eval_out_{dtype}"
    command = [
        lm_eval,
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model},dtype={dtype}",
        "--tasks",
        LM_EVAL_TASK,
        "--include_path",
        str(tasks),
        "--batch_size",
        str(batch_size),
        "--device",
        "cpu",
        "--num_fewshot",
        "0",
        "--output_path",
        str(out_dir),
        "--log_samples",
    ]
    log = work / f"lm_eval_{dtype}.log"
    seconds, cpu = timed(command, env, log)
    scoring = lm_eval_scoring_seconds(log, time.time())
    results_file = sorted(out_dir.rglob("results_*.json"))[-1]
    accuracy = json.loads(results_file.read_text())["results"][LM_EVAL_TASK]["acc,none"]
    samples_file = sorted(out_dir.rglob(f"samples_{LM_EVAL_TASK}_*.jsonl"))[-1]
    predictions = {}
    for line in samples_file.read_text().splitlines():
        sample = json.loads(line)
        scores = [float(resp[0][0]) for resp in sample["resps"]]
        predictions[int(sample["doc_id"])] = max(range(len(scores)), key=scores.__getitem__)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "scoring_seconds": scoring,
        "accuracy": accuracy,
        "predictions": predictions,
        "version": _lm_eval_version(lm_eval),
    }


def _lm_eval_version(lm_eval: str) -> str:
    python = Path(lm_eval).parent / "python"
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('lm-eval'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() or "?"


def run_alloylm(
    model: Path,
    csv_path: Path,
    work: Path,
    protocol: str,
    batch_size: int,
    env: dict[str, str],
    dtype: str = "float32",
) -> dict:
    output = work / f"alloylm_{protocol}_{dtype}.json"
    command = [
        sys.executable,
        "-m",
        "alloylm.cli.eval",
        str(model),
        "--tasks",
        str(csv_path),
        "--protocol",
        protocol,
        "--template",
        "plain",
        "--batch-size",
        str(batch_size),
        "--no-cache",
        "--no-save",
        "--dtype",
        dtype,
        "--output",
        str(output),
    ]
    seconds, cpu = timed(command, env, work / f"alloylm_{protocol}_{dtype}.log")
    record = json.loads(output.read_text())["results"][0]
    predictions = {
        index: "ABCD".index(p["pred"]) if p["pred"] else None
        for index, p in enumerate(record["predictions"])
    }
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "accuracy": record["score"],
        "n": record["n"],
        "unparseable": record["unparseable"],
        "scoring_seconds": record["seconds"],
        "predictions": predictions,
        "settings": record["settings"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--lm-eval", default=os.environ.get("LM_EVAL_BIN", "/work/lmeval-venv/bin/lm_eval")
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--task",
        default=DEFAULT_TASK,
        help="MMLU CSV under the data root (alloylm.resources.data_root)",
    )
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument(
        "--no-bf16",
        action="store_true",
        help="skip the bfloat16 rows (run by default on a CPU with AVX512-BF16 or AMX)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run each contender N times, interleaved; times are the medians (all runs are kept)",
    )
    add_force_argument(parser)
    args = parser.parse_args()
    run = begin("eval_speed", force=args.force)

    from alloylm.models.sources import resolve_model

    model = resolve_model(MODEL)
    from alloylm.resources import data_root

    csv_path = data_root() / args.task
    with open(csv_path, newline="", encoding="utf-8") as handle:
        n_questions = sum(1 for _ in csv.reader(handle))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="eval_speed-") as tmp:
        work = Path(tmp)
        runs: dict[str, list[dict]] = {}
        from alloylm.train._trl import cpu_has_bf16_matmul

        bf16 = not args.no_bf16 and cpu_has_bf16_matmul()
        dtypes = ["float32", "bfloat16"] if bf16 else ["float32"]
        for _ in range(max(1, args.repeats)):  # interleaved: a slow spell hits both contenders
            for dtype in dtypes:
                suffix = "" if dtype == "float32" else " bf16"
                if Path(args.lm_eval).exists():
                    runs.setdefault(f"lm-eval loglik{suffix}", []).append(
                        run_lm_eval(
                            args.lm_eval, model, csv_path, work, args.batch_size, env, dtype
                        )
                    )
                runs.setdefault(f"alloylm loglik{suffix}", []).append(
                    run_alloylm(model, csv_path, work, "loglik", args.batch_size, env, dtype)
                )
            if not args.skip_paper:  # every repeat: its ratio to loglik is a median of medians
                runs.setdefault("alloylm paper", []).append(
                    run_alloylm(model, csv_path, work, "paper", args.batch_size, env)
                )
        rows = {name: median_row(found) for name, found in runs.items()}
    report(rows, n_questions, args, run)


def median_row(runs: list[dict]) -> dict:
    """The first run's answers with the median of every timing over the runs (all runs kept)."""
    row = dict(runs[0])
    for key in ("seconds", "cpu_seconds", "scoring_seconds"):
        values = [run[key] for run in runs if run.get(key) is not None]
        if values:
            row[key] = statistics.median(values)
    row["runs_seconds"] = [round(run["seconds"], 2) for run in runs]
    return row


def differing(a: dict, b: dict) -> int:
    """Questions whose chosen letter differs between two runs."""
    return sum(1 for i in a["predictions"] if a["predictions"][i] != b["predictions"].get(i))


def compare(ours: dict, peer: dict, n: int) -> dict:
    return {
        "speedup_qps": round(peer["seconds"] / ours["seconds"], 2),
        "speedup_cpu_seconds": round(peer["cpu_seconds"] / ours["cpu_seconds"], 2),
        "speedup_scoring_phase": round(peer["scoring_seconds"] / ours["scoring_seconds"], 2)
        if peer.get("scoring_seconds")
        else None,
        "questions_answered_differently": differing(peer, ours),
        "accuracy_difference_questions": round(abs(peer["accuracy"] - ours["accuracy"]) * n),
        "lm_eval_version": peer["version"],
    }


def report(rows: dict[str, dict], n: int, args: argparse.Namespace, run) -> None:  # noqa: ANN001
    ours, peer = rows["alloylm loglik"], rows.get("lm-eval loglik")
    summary = {}
    for name, row in rows.items():
        summary[name] = {
            "seconds": round(row["seconds"], 2),
            "cpu_seconds": round(row["cpu_seconds"], 2),
            "questions_per_s": round(n / row["seconds"], 3),
            "accuracy": row["accuracy"],
            **({"scoring_seconds": row["scoring_seconds"]} if "scoring_seconds" in row else {}),
            **({"unparseable": row["unparseable"]} if "unparseable" in row else {}),
            "runs_seconds": row["runs_seconds"],
        }
    comparison = compare(ours, peer, n) if peer is not None else {}
    ours_bf16, peer_bf16 = rows.get("alloylm loglik bf16"), rows.get("lm-eval loglik bf16")
    if ours_bf16 is not None and peer_bf16 is not None:
        comparison["bf16"] = compare(ours_bf16, peer_bf16, n)
        comparison["bf16"]["speedup_qps_vs_lm_eval_fp32"] = round(
            peer["seconds"] / ours_bf16["seconds"], 2
        )
    if ours_bf16 is not None:  # what bf16 costs: answers that move against our own fp32 run
        comparison["bf16_answers_differing_from_fp32"] = differing(ours, ours_bf16)
    result = {
        "benchmark": "eval_speed",
        "task": args.task,
        "questions": n,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "command": f"python benchmarks/eval_speed.py --repeats {args.repeats}"
        + (" --skip-paper" if args.skip_paper else ""),
        "model": f"{MODEL} (CPU; fp32 unless the row says bf16: weights loaded in bfloat16)",
        "prompt": "lm-eval mmlu default, 0-shot, plain (no chat template)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rows": summary,
        "comparison": comparison,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run": run_record(run),  # date, load at start and end, CPU (benchmarks/_common.py)
    }
    out = results_dir() / "eval_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{'run':<16} {'whole process s':>16} {'CPU s':>8} {'scoring s':>10} {'questions/s':>12} {'accuracy':>9}"
    )
    for name, row in summary.items():
        scoring = row.get("scoring_seconds")
        print(
            f"{name:<16} {row['seconds']:>16.1f} {row['cpu_seconds']:>8.1f} {scoring if scoring is not None else '-':>10} "
            f"{row['questions_per_s']:>12.2f} {row['accuracy']:>9.4f}"
        )
    if peer is not None:
        print(
            f"alloylm loglik / lm-eval: {comparison['speedup_qps']}x questions/s (whole process), "
            f"{comparison['speedup_cpu_seconds']}x CPU seconds, {comparison['speedup_scoring_phase']}x scoring phase; "
            f"{comparison['questions_answered_differently']} of {n} questions answered differently"
        )
    if "bf16" in comparison:
        bf16 = comparison["bf16"]
        print(
            f"in bf16: {bf16['speedup_qps']}x lm-eval bf16, {bf16['speedup_qps_vs_lm_eval_fp32']}x "
            f"lm-eval fp32; {bf16['questions_answered_differently']} answers differ from lm-eval "
            f"bf16, {comparison['bf16_answers_differing_from_fp32']} from our fp32"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
