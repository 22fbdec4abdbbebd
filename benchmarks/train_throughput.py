"""CPT training throughput and memory: the `cpt` stage (TRL through alloylm) against a plain PyTorch loop.

Same model (the embedded SmolLM2-135M-Instruct, fp32 weights), same packed rows (the cpt
stage's own BOS-separated, wrapped packing of the A&P 2e corpus, seq len 512), batch 4, AdamW at
the same learning rate, gradient clipping at 1.0 in both. Each contender runs in its own
subprocess so that peak RSS (ru_maxrss) is its own. Tokens/s is measured at steady state: from
the end of step 1 to the end of the last step (the first step pays one-time costs); the whole-run
figure, first step included, is reported beside it.

    python benchmarks/train_throughput.py                      # 10 steps each
    python benchmarks/train_throughput.py --ablation --ablation-steps 3

`--ablation` also runs TRL's SFTTrainer with its own defaults (gradient checkpointing on, bf16
autocast, per-token entropy/accuracy over the full vocabulary) and with one default removed at
a time, on the same rows, to show where the time goes.

The peer is the plain loop in float32. The cpt stage runs with its default `dtype: auto` (bf16
autocast over fp32 weights on a CPU with AVX512-BF16 or AMX, float32 elsewhere) and again in
float32; where the CPU has bf16 instructions the plain loop also runs under bf16 autocast, so the
table shows what the stage adds beyond the precision. `make bench` runs it with `--steps 3`
(these, and the cpt stage with LoRA r16); `--compile` adds the plain loop through torch.compile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_force_argument, begin, results_dir, run_record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = results_dir() / "train_throughput.json"
MODEL = os.environ.get(
    "ALLOY_BENCH_MODEL", "embedded:smollm2-135m-instruct"
)  # tiny:llama for a smoke run
SEQ_LEN, BATCH, LR, SEED = 512, 4, 5.0e-5, 42
# LoRA as the issue asks to compare it: rank 16 on every linear layer (the stage's defaults
# otherwise: no dropout); on CPU it should be the fast path, since frozen matrices get no weight
# gradients. The same with dropout 0.05 on the adapters' inputs shows what that costs.
LORA = {"r": 16, "alpha": 32, "target_modules": "all-linear", "merge_adapter": True}
LORA_DROPOUT = {**LORA, "dropout": 0.05}
# TRL SFTTrainer defaults, then each one removed (the last = alloylm's settings inside plain TRL).
ABLATIONS = {
    "trl_defaults": {},
    "trl_no_grad_ckpt": {"activation_checkpointing": False},
    "trl_no_grad_ckpt_fp32": {"activation_checkpointing": False, "bf16": False},
}


def corpus_path() -> Path:
    from alloylm.resources import data_root

    return data_root() / "openstax_corpus" / "anatomy_physiology_2e.jsonl"


def packed_rows(tokenizer, n_rows: int) -> list[list[int]]:
    """The cpt stage's rows for the benchmark corpus (its own tokenization and packing)."""
    from alloylm.data.mixing import mix
    from alloylm.data.packing import pack_wrapped
    from alloylm.data.sources import DataSource, load_text_docs
    from alloylm.stages.cpt import tokenize_documents

    docs = load_text_docs(DataSource(path=str(corpus_path()), limit=200)).records
    mixed, _ = mix([docs], [1.0], SEED)
    rows = pack_wrapped(tokenize_documents(tokenizer, [d.text for d in mixed]), SEQ_LEN).input_ids
    assert len(rows) >= n_rows, "corpus too small for the requested steps"
    return rows[:n_rows]


def steady_rate(
    step_ends: list[float], start: float, tokens_per_step: int, cpu_ends: list[float] | None = None
) -> dict:
    """Tokens/s from the end of step 1 to the end of the last step (wall and process-CPU time)."""
    steps = len(step_ends)
    steady = (steps - 1) * tokens_per_step / (step_ends[-1] - step_ends[0]) if steps > 1 else None
    durations = [b - a for a, b in zip([start, *step_ends[:-1]], step_ends, strict=True)]
    out = {
        "steps": steps,
        "tokens_per_s": steady,
        "tokens_per_s_incl_first_step": steps * tokens_per_step / (step_ends[-1] - start),
        "step_seconds_median": statistics.median(durations[1:] or durations),
        "first_step_seconds": durations[0],
    }
    if cpu_ends and steps > 1:
        # Less sensitive to other processes on a shared machine than wall time.
        out["tokens_per_cpu_s"] = (steps - 1) * tokens_per_step / (cpu_ends[-1] - cpu_ends[0])
    return out


def run_plain(steps: int, *, compiled: bool = False, autocast: bool = False) -> dict:
    """The plain loop; `compiled`: the model through torch.compile (inductor), to see whether
    fusing the work between matrix products pays on this CPU (the first step pays the compile);
    `autocast`: forward and loss under torch.autocast("cpu", bfloat16), as Trainer's bf16 does."""
    import contextlib

    import torch

    from alloylm.models.loading import load_causal_lm, load_tokenizer
    from alloylm.models.sources import resolve_model

    folder = resolve_model(MODEL)
    rows = packed_rows(load_tokenizer(folder), steps * BATCH)
    torch.manual_seed(SEED)
    model = load_causal_lm(folder, dtype="float32")
    model.train()
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LR, weight_decay=0.0, fused=True
    )  # as the stage
    losses, ends, cpu_ends = [], [], []
    start = time.perf_counter()
    for step in range(steps):
        batch = torch.tensor(rows[step * BATCH : (step + 1) * BATCH])
        precision = (
            torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        )
        with precision:
            loss = forward(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        ends.append(time.perf_counter())
        cpu_ends.append(time.process_time())
    return {
        **steady_rate(ends, start, BATCH * SEQ_LEN, cpu_ends),
        "losses": losses,
        "real_token_fraction": 1.0,
        "dtype": "bfloat16 autocast" if autocast else "float32",
    }


class _Clock:
    """A stage Progress that timestamps every logged step."""

    def __init__(self) -> None:
        self.start = 0.0
        self.ends: list[float] = []
        self.cpu_ends: list[float] = []
        self.losses: list[float] = []

    def start_clock(self, *args, **kwargs) -> None:
        self.start = time.perf_counter()

    def update(self, step, **fields) -> None:
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())
        self.losses.append(fields.get("loss"))


def run_stage(steps: int, lora: dict | None = None, dtype: str = "auto") -> dict:
    from alloylm.contract import Progress, StageContext
    from alloylm.stages import cpt
    from alloylm.train._trl import resolve_dtype

    clock = _Clock()

    class Timed(Progress):
        def start(self, total, description=""):
            clock.start_clock()

        def update(self, step, **fields):
            clock.update(step, **fields)

        def log(self, message):
            pass

    cfg = cpt.Config(
        model=MODEL,
        data=[{"path": str(corpus_path()), "limit": 200}],
        train={
            "max_steps": steps,
            "max_seq_length": SEQ_LEN,
            "per_device_batch_size": BATCH,
            "learning_rate": LR,
            "save_steps": 10_000,
            "dtype": dtype,
            **({"lora": lora} if lora else {}),
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ctx = StageContext(
            "cpt", "bench", SEED, root / "work", root / "state", root, progress=Timed()
        )
        ctx.work_dir.mkdir()
        result = cpt.run(ctx, cfg)
    out = steady_rate(clock.ends, clock.start, BATCH * SEQ_LEN, clock.cpu_ends)
    return {
        **out,
        "losses": clock.losses,
        "real_token_fraction": result.metrics["real_token_fraction"],
        "dtype": f"{dtype} ({resolve_dtype(dtype)})" if dtype == "auto" else dtype,
    }


def run_trl_variant(steps: int, overrides: dict) -> dict:
    """TRL's SFTTrainer with its own defaults (plus `overrides`) on the same rows."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from alloylm.models.loading import load_causal_lm, load_tokenizer
    from alloylm.models.sources import resolve_model

    folder = resolve_model(MODEL)
    tokenizer = load_tokenizer(folder)
    rows = packed_rows(tokenizer, steps * BATCH)
    clock = _Clock()

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock.start_clock()

        def on_step_end(self, args, state, control, **kwargs):
            clock.update(state.global_step)

    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(
            output_dir=tmp,
            max_steps=steps,
            per_device_train_batch_size=BATCH,
            learning_rate=LR,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            logging_steps=1,
            max_length=None,
            dataset_kwargs={"skip_prepare_dataset": True},
            seed=SEED,
            use_cpu=True,  # required on CPU for TRL's default bf16
            **overrides,
        )
        trainer = SFTTrainer(
            model=load_causal_lm(folder, dtype="float32"),
            args=args,
            processing_class=tokenizer,
            train_dataset=Dataset.from_dict({"input_ids": rows, "labels": rows}),
            callbacks=[Timer()],
        )
        trainer.train()
    settings = {"bf16": args.bf16, "activation_checkpointing": args.activation_checkpointing}
    rate = steady_rate(clock.ends, clock.start, BATCH * SEQ_LEN, clock.cpu_ends)
    return {**rate, "settings": settings}


def child(part: str, steps: int) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if part == "plain":
        out = run_plain(steps)
    elif part == "plain_compiled":
        out = run_plain(steps, compiled=True)
    elif part == "plain_bf16":
        out = run_plain(steps, autocast=True)
    elif part == "stage":
        out = run_stage(steps)
    elif part == "stage_fp32":
        out = run_stage(steps, dtype="float32")
    elif part == "stage_lora":
        out = run_stage(steps, lora=LORA)
    elif part == "stage_lora_dropout":
        out = run_stage(steps, lora=LORA_DROPOUT)
    else:
        out = run_trl_variant(steps, ABLATIONS[part])
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["load_avg_1m"] = os.getloadavg()[0]  # how busy the shared machine was
    print("RESULT " + json.dumps(out), flush=True)


def measure(part: str, steps: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", part, "--steps", str(steps)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{part} failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--ablation", action="store_true", help="also run TRL defaults and variants"
    )
    parser.add_argument("--ablation-steps", type=int, default=3)
    parser.add_argument(
        "--no-lora",
        action="store_true",
        help="skip the cpt stage with LoRA r16 all-linear (with and without dropout 0.05)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="also the plain loop through torch.compile"
    )
    parser.add_argument(
        "--add", choices=sorted(ABLATIONS), help="run one TRL variant, add it to the JSON"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    add_force_argument(parser)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps)
        return
    run = begin("train_throughput", force=args.force)
    from alloylm.train._trl import cpu_has_bf16_matmul

    plan = [
        ("plain_pytorch", "plain", args.steps),
        ("alloylm_cpt", "stage", args.steps),
        ("alloylm_cpt_fp32", "stage_fp32", args.steps),
    ]
    if cpu_has_bf16_matmul():
        plan.append(("plain_pytorch_bf16_autocast", "plain_bf16", args.steps))
    if not args.no_lora:
        plan.append(("alloylm_cpt_lora_r16", "stage_lora", args.steps))
        plan.append(("alloylm_cpt_lora_r16_dropout", "stage_lora_dropout", args.steps))
    if args.compile:
        plan.append(("plain_pytorch_compiled", "plain_compiled", args.steps))
    if args.ablation:
        plan += [(name, name, args.ablation_steps) for name in ABLATIONS]
    results: dict[str, dict] = {}
    if args.add:  # one more TRL variant beside the results already written
        results = json.loads(RESULTS.read_text())["results"]
        plan = [(args.add, args.add, args.ablation_steps)]
    for name, part, steps in plan:
        results[name] = measure(part, steps)
        write_report(
            results, results["plain_pytorch"]["steps"], run
        )  # partial results survive an interrupted run
        print(f"{name}: {results[name]['tokens_per_s']:.1f} tokens/s", flush=True)
    print_table(results)
    print(f"written to {RESULTS}")


def write_report(results: dict[str, dict], steps: int, run) -> None:  # noqa: ANN001
    plain = results["plain_pytorch"]
    for entry in results.values():
        entry["ratio_vs_plain"] = entry["tokens_per_s"] / plain["tokens_per_s"]
        entry["cpu_ratio_vs_plain"] = entry["tokens_per_cpu_s"] / plain["tokens_per_cpu_s"]
    report = {
        "benchmark": "train_throughput",
        "model": MODEL,
        "seq_len": SEQ_LEN,
        "batch": BATCH,
        "dtype": "fp32 weights; each contender's compute precision in its 'dtype'",
        "steps": steps,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "note": "measured on an idle machine unless run.loaded says otherwise; "
        "tokens_per_cpu_s (process CPU time) is less sensitive to the load; steady state excludes step 1",
        "results": results,
        "run": run_record(run),  # date, load at start and end, CPU (benchmarks/_common.py)
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


def print_table(results: dict[str, dict]) -> None:
    head = f"{'contender':28} {'steps':>5} {'tok/s':>7} {'ratio':>6} {'tok/cpu-s':>9} {'ratio':>6}"
    print(head + f" {'peak RSS MiB':>12} {'real tok':>8} {'load':>5}")
    for name, r in results.items():
        real = r.get("real_token_fraction")
        print(
            f"{name:28} {r['steps']:>5} {r['tokens_per_s']:>7.1f} {r['ratio_vs_plain']:>6.2f} "
            f"{r['tokens_per_cpu_s']:>9.1f} {r['cpu_ratio_vs_plain']:>6.2f} {r['peak_rss_mib']:>12.0f} "
            f"{'' if real is None else f'{real:.3f}':>8} {r['load_avg_1m']:>5.1f}"
        )


if __name__ == "__main__":
    main()
