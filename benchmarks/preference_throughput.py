"""Preference training throughput and memory: the dpo / orpo stages against TRL called directly.

Same model (the embedded SmolLM2-135M-Instruct, fp32 weights), same pairs (OpenStax A&P 2e
glossary term/definition pairs, rendered once by alloylm's chat template and given as the same
strings to both sides), batch 4, max length 128, lr 5e-6, beta 0.05, one epoch, no gradient
checkpointing, no mixed precision on both sides. Each contender runs in its own subprocess, so
that peak RSS (ru_maxrss) is its own. pairs/cpu-s = pairs of the epoch / process-CPU seconds of
`trainer.train()` (all threads; steadier than wall time on a shared machine, which is reported
too); model loading, data preparation and the reference precompute are outside the epoch and show
in the run's wall time.

Rounds (the two contenders of a round run at the same time, one core each, so that both see the
same machine: run one after the other, they were 10-30% apart from clock drift alone):
- dpo, online reference            alloylm stage vs TRL DPOTrainer
- dpo, precomputed reference       alloylm stage, first run (computes and caches) vs TRL
- orpo                             alloylm stage vs TRL's experimental ORPOTrainer
- dpo, cached vs online reference  alloylm rerun with another beta (cache hit: no reference
                                   pass) vs the alloylm stage with the online reference

TRL direct gets the stage's exact rows in the stage's order: equal final losses show that both
sides trained the same batches with the same settings.

    python benchmarks/preference_throughput.py --pairs 32              # 8 steps per epoch
    python benchmarks/preference_throughput.py --pairs 32 --repeats 3  # medians of 3 runs

Targets (issue 3): alloylm no slower than TRL direct; an epoch with precomputed (cached)
reference log-probs >= 1.3x faster than with the online reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_force_argument, begin, results_dir, run_record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = results_dir() / "preference_throughput.json"
MODEL = os.environ.get(
    "ALLOY_BENCH_MODEL", "embedded:smollm2-135m-instruct"
)  # tiny:llama: smoke run
BATCH, MAX_LENGTH, LR, BETA, SEED = 4, 128, 5.0e-6, 0.05, 42
# Each round runs its two contenders at the same time, one core each: the host's clock speed
# drifts by 10-30% over minutes on this shared machine, so contenders run one after the other are
# not comparable; side by side they see the same machine. The reference cache of round 2's first
# run is what round 4's cached rerun reads.
ROUNDS = (
    ("alloy_dpo", "trl_dpo"),
    ("alloy_dpo_precompute_first", "trl_dpo_precompute"),
    ("alloy_orpo", "trl_orpo"),
    ("alloy_dpo_precompute_cached", "alloy_dpo_online"),
)
CONTENDERS = tuple(name for pair in ROUNDS for name in pair)


def glossary_pairs_file(folder: Path, n: int) -> Path:
    """The first `n` glossary preference pairs of A&P 2e (distill's deterministic builder)."""
    from alloylm.distill.builders import glossary_preference
    from alloylm.resources import data_root

    records = glossary_preference(
        data_root() / "openstax_sft" / "anatomy_physiology_2e_glossary.jsonl", seed=SEED, limit=n
    )
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(body) + "\n" for _, body in records))
    return path


def rendered_rows(model_dir: Path, pairs_file: Path) -> tuple[Any, list[dict[str, str]]]:
    """The exact strings the stages train on, in the stages' order (same loading, seeded mixing,
    chat template and pad token), so that TRL direct sees the same batches: equal losses show it."""

    from alloylm.data.chat_template import pick_pad_token
    from alloylm.data.preference import PreferenceSource
    from alloylm.models.loading import load_tokenizer
    from alloylm.train.preference_fit import prepare_pairs

    tokenizer = load_tokenizer(model_dir)
    pick_pad_token(tokenizer)
    rows, _, _ = prepare_pairs(
        lambda _: None, tokenizer, [PreferenceSource(path=str(pairs_file))],
        seed=SEED, max_prompt_length=MAX_LENGTH - 1, max_length=MAX_LENGTH, long_prompts="drop",
    )  # fmt: skip
    return tokenizer, rows


def train_settings() -> dict[str, Any]:
    return {"learning_rate": LR, "per_device_batch_size": BATCH, "max_seq_length": MAX_LENGTH, "epochs": 1,
            "warmup_ratio": 0.1, "lr_scheduler": "cosine", "dtype": "float32", "logging_steps": 1, "seed": SEED}  # fmt: skip


def timed_train(train: Any, timing: dict[str, float]) -> Any:
    """`train` wrapped to record its wall and process-CPU seconds (all threads) into `timing`."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        out = train(*args, **kwargs)
        timing.update(train_cpu_s=time.process_time() - cpu, train_s=time.perf_counter() - wall)
        return out

    return wrapper


def run_alloy(
    kind: str, model_dir: Path, pairs_file: Path, state: Path, precompute: bool, beta: float
) -> dict[str, Any]:
    import alloylm.train._trl as glue
    from alloylm.contract import StageContext
    from alloylm.stages import dpo, orpo

    timing: dict[str, float] = {}
    glue.train_resumable = timed_train(
        glue.train_resumable, timing
    )  # the stage imports it at call time
    reference: dict[str, float] = {}
    score_reference = glue.CachedRefDPOTrainer._precompute_ref_logps

    def timed_precompute(self, dataset, name, batch_size):  # noqa: ANN001, ANN202
        cpu, wall = time.process_time(), time.perf_counter()
        out = score_reference(self, dataset, name, batch_size)
        reference["ref_pass_cpu_s"] = (
            reference.get("ref_pass_cpu_s", 0.0) + time.process_time() - cpu
        )
        reference["ref_pass_s"] = reference.get("ref_pass_s", 0.0) + time.perf_counter() - wall
        return out

    # TRL scores the reference in the trainer's constructor, outside train(): timed on its own
    glue.CachedRefDPOTrainer._precompute_ref_logps = timed_precompute

    work = Path(tempfile.mkdtemp(prefix="work-", dir=state.parent))
    ctx = StageContext(kind, "bench", SEED, work, state, state.parent)
    if kind == "dpo":
        cfg = dpo.Config(model=str(model_dir), data=[{"path": str(pairs_file)}], beta=beta, max_prompt_length=MAX_LENGTH - 1,
                         precompute_ref_log_probs=precompute, train=train_settings())  # fmt: skip
        result = dpo.run(ctx, cfg)
    else:
        cfg = orpo.Config(model=str(model_dir), data=[{"path": str(pairs_file)}], beta=0.1, max_prompt_length=MAX_LENGTH - 1,
                          train={**train_settings(), "learning_rate": LR})  # fmt: skip
        result = orpo.run(ctx, cfg)
    metrics = result.metrics
    return {"pairs": metrics["pairs"], "steps": metrics["steps"], "train_s": round(timing["train_s"], 3),
            "train_cpu_s": round(timing["train_cpu_s"], 3), "final_loss": metrics["final_loss"],
            "ref_log_probs": metrics.get("ref_log_probs"),
            "ref_pass_cpu_s": round(reference.get("ref_pass_cpu_s", 0.0), 3),
            "ref_pass_s": round(reference.get("ref_pass_s", 0.0), 3)}  # fmt: skip


def run_trl(
    kind: str, model_dir: Path, pairs_file: Path, out: Path, precompute: bool
) -> dict[str, Any]:
    """TRL called directly, with the settings the stage passes (written out, not through alloylm)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    tokenizer, rows = rendered_rows(model_dir, pairs_file)
    common = dict(output_dir=str(out), learning_rate=LR, per_device_train_batch_size=BATCH, num_train_epochs=1,
                  lr_scheduler_type="cosine", warmup_steps=0.1, logging_steps=1, seed=SEED, data_seed=SEED, report_to="none",
                  save_strategy="no", bf16=False, fp16=False, gradient_checkpointing=False, max_length=MAX_LENGTH,
                  disable_tqdm=True,
        dataloader_pin_memory=False, optim="adamw_torch_fused")  # fmt: skip
    # optim: the stages' TrainConfig default, and transformers' own
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="float32")
    if kind == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(**common, beta=BETA, precompute_ref_log_probs=precompute)
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
    else:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args = ORPOConfig(**common, beta=0.1)
        trainer = ORPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
    timing: dict[str, float] = {}
    timed_train(trainer.train, timing)()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"pairs": len(rows), "steps": trainer.state.global_step, "train_s": round(timing["train_s"], 3),
            "train_cpu_s": round(timing["train_cpu_s"], 3), "final_loss": losses[-1]}  # fmt: skip


def run_one(name: str, workdir: Path, pairs_file: Path) -> dict[str, Any]:
    from alloylm.models.sources import resolve_model

    model_dir = resolve_model(MODEL)
    state = workdir / ("state-precompute" if "alloy_dpo_precompute" in name else f"state-{name}")
    started = time.perf_counter()
    # every contender trains from scratch (as the runner has it once a stage is built); the
    # reference cache in the same state folder is kept
    shutil.rmtree(state / "checkpoints", ignore_errors=True)
    if name.endswith("_precompute_first"):  # a first run: no reference cache of an earlier repeat
        shutil.rmtree(state, ignore_errors=True)
    if name.startswith("alloy_"):
        kind = "orpo" if "orpo" in name else "dpo"
        beta = 0.1 if name.endswith("_cached") else BETA  # another beta: the cache must still hit
        row = run_alloy(kind, model_dir, pairs_file, state, "precompute" in name, beta)
        expected = {"_precompute_first": "computed", "_precompute_cached": "cached"}
        for suffix, how in expected.items():
            if name.endswith(suffix) and row.get("ref_log_probs") != how:
                raise RuntimeError(
                    f"{name}: reference log-probs {row.get('ref_log_probs')}, not {how}"
                )
    else:
        row = run_trl(
            "orpo" if "orpo" in name else "dpo",
            model_dir,
            pairs_file,
            workdir / f"out-{name}",
            "precompute" in name,
        )
    row["wall_s"] = round(time.perf_counter() - started, 3)
    row["pairs_per_s"] = round(row["pairs"] / row["train_s"], 4)
    row["pairs_per_cpu_s"] = round(row["pairs"] / row["train_cpu_s"], 4)
    if "ref_pass_cpu_s" in row:  # the whole training: the reference pass, then the epoch
        row["pairs_per_cpu_s_with_ref"] = round(
            row["pairs"] / (row["train_cpu_s"] + row["ref_pass_cpu_s"]), 4
        )
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per contender (default 1)"
    )
    parser.add_argument(
        "--only", nargs="*", choices=CONTENDERS, help="run only the rounds holding these"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="run every round N times; medians are reported"
    )
    parser.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    add_force_argument(parser)
    args = parser.parse_args()
    if args.one:  # child process: one contender, JSON on the last stdout line
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        workdir = Path(args.workdir)
        print(json.dumps(run_one(args.one, workdir, workdir / "pairs.jsonl")))
        return 0
    run = begin("preference_throughput", force=args.force)
    # --workdir: reuse an earlier run's folder (its pairs and its reference cache, for a partial rerun)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pref-bench-"))
    if not (workdir / "pairs.jsonl").exists():
        glossary_pairs_file(workdir, args.pairs)
    results: dict[str, Any] = {}
    if args.only and RESULTS.exists():  # a partial rerun updates the earlier results
        results = json.loads(RESULTS.read_text()).get("results", {})
    # One thread per contender: process-CPU time then measures work, not the spin-waiting of a
    # second thread that the other users of a shared machine keep descheduled.
    env = {
        **os.environ,
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "TQDM_DISABLE": "1",
        "OMP_NUM_THREADS": str(args.threads),
    }
    rounds = [pair for pair in ROUNDS if not args.only or set(pair) & set(args.only)]
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(max(1, args.repeats)):
        for pair in rounds:
            for name, row in run_side_by_side(pair, workdir, env).items():
                runs.setdefault(name, []).append(row)
                print(f"{name:<30} {row}", flush=True)
    results.update({name: median_row(rows) for name, rows in runs.items()})
    report(results, args.pairs, args.threads, args.repeats, run)
    return 0


def run_side_by_side(
    pair: tuple[str, ...], workdir: Path, env: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Start the contenders of one round together; their JSON rows once both have finished."""
    started = {
        name: subprocess.Popen(
            [sys.executable, __file__, "--one", name, "--workdir", str(workdir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in pair
    }
    rows = {}
    for name, process in started.items():
        out, err = process.communicate()
        if process.returncode != 0:
            print(out[-3000:], err[-3000:], file=sys.stderr)
            raise SystemExit(f"{name} failed")
        rows[name] = json.loads(out.strip().splitlines()[-1])
    return rows


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The first run's row with the median of each rate and time over the runs."""
    row = dict(rows[0])
    keys = ["train_s", "train_cpu_s", "wall_s", "pairs_per_s", "pairs_per_cpu_s"]
    keys += [
        key for key in ("ref_pass_cpu_s", "ref_pass_s", "pairs_per_cpu_s_with_ref") if key in row
    ]
    for key in keys:
        row[key] = statistics.median(r[key] for r in rows)
        row[f"{key}_runs"] = [r[key] for r in rows]  # the spread over repeats
    row["runs"] = len(rows)
    return row


def ratio(results: dict[str, Any], a: str, b: str, key: str = "pairs_per_cpu_s") -> float | None:
    """results[a][key] / results[b][key]: > 1 when `a` trains more pairs per second."""
    if a in results and b in results:
        return round(results[a][key] / results[b][key], 3)
    return None


def report(results: dict[str, Any], pairs: int, threads: int, repeats: int, run: Any) -> None:
    print(
        f"\n{'contender':<30} {'pairs/cpu-s':>11} {'pairs/s':>8} {'epoch s':>8} {'wall s':>8} {'peak MB':>8}  ref"
    )
    for name, row in results.items():
        print(f"{name:<30} {row['pairs_per_cpu_s']:>11.4f} {row['pairs_per_s']:>8.4f} {row['train_s']:>8.1f} "
              f"{row['wall_s']:>8.1f} {row['peak_rss_mb']:>8.0f}  {row.get('ref_log_probs') or ''}")  # fmt: skip
    ratios = {
        "alloy_vs_trl_dpo": ratio(results, "alloy_dpo", "trl_dpo"),
        "alloy_vs_trl_dpo_precompute": ratio(results, "alloy_dpo_precompute_first", "trl_dpo_precompute"),
        "alloy_vs_trl_orpo": ratio(results, "alloy_orpo", "trl_orpo"),
        "cached_precompute_vs_online_epoch": ratio(results, "alloy_dpo_precompute_cached", "alloy_dpo_online"),
        "cached_precompute_vs_online_epoch_wall": ratio(results, "alloy_dpo_precompute_cached", "alloy_dpo_online", "pairs_per_s"),
    }  # fmt: skip
    first, cached = (
        results.get("alloy_dpo_precompute_first"),
        results.get("alloy_dpo_precompute_cached"),
    )
    if first and cached:  # whole runs: the cached rerun also skips the reference pass
        ratios["cached_vs_first_precompute_run_wall"] = round(first["wall_s"] / cached["wall_s"], 3)
    # the first run as a user pays it: its reference pass plus its epoch, against the online epoch
    online = results.get("alloy_dpo_online")
    if first and online and first.get("pairs_per_cpu_s_with_ref"):
        ratios["first_precompute_with_ref_pass_vs_online"] = round(
            first["pairs_per_cpu_s_with_ref"] / online["pairs_per_cpu_s"], 3
        )
    print(
        "\nratios, pairs per CPU-second of the epoch unless named _wall (>1 = the first is faster):"
    )
    for key, value in ratios.items():
        print(f"  {key:<40} {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "preference_throughput",
        "command": f"python benchmarks/preference_throughput.py --pairs {pairs} --threads {threads} --repeats {repeats}",
        "model": MODEL,
        "settings": {"pairs": pairs, "batch": BATCH, "max_length": MAX_LENGTH, "lr": LR, "beta": BETA, "dtype": "float32", "threads": threads},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg_1m_at_end": os.getloadavg()[0]},
        "results": results,
        "ratios": ratios,
        "targets": {"alloy_vs_trl": ">= 1.0 (no slower)", "cached_precompute_vs_online_epoch": ">= 1.3"},
        "note": "pairs_per_cpu_s = pairs / process-CPU seconds (all threads) of trainer.train(); the two contenders of a round ran side by side, one core each",
        "run": run_record(run),  # date, load at start and end, CPU (benchmarks/_common.py)
    }  # fmt: skip
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwritten {RESULTS}")


if __name__ == "__main__":
    raise SystemExit(main())
