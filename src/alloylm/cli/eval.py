"""`alloy eval MODEL... --tasks FILE_OR_NAME... --protocol paper|loglik|cloze`.

Every model is evaluated with identical settings; finished results are cached by content hash
($ALLOY_HOME/evals) and not recomputed. Results are printed as a table and written as one JSON file:
--output, else alloy-evals/<UTC time>.json in the current folder. Nothing is written into a model's
folder: a model folder is an input (a pipeline artifact, a DPO reference) whose identity is its
content, and files added to it would make it look like another model.
"""

from __future__ import annotations

import argparse

from alloylm.registry import EVAL_PROTOCOLS, EVAL_TASK_TYPES

DEFAULT_OUTPUT_DIR = "alloy-evals"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="model sources: embedded:..., tiny:llama, folders, .gguf, hub ids",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        required=True,
        metavar="TASK",
        help="benchmark files, names under $ALLOY_DATA, or lm_eval:<task>",
    )
    parser.add_argument(
        "--protocol",
        nargs="+",
        default=["paper"],
        choices=EVAL_PROTOCOLS.names(),
        help="scoring protocols (default: paper, the study's)",
    )
    parser.add_argument(
        "--type",
        default=None,
        choices=EVAL_TASK_TYPES.names(),
        help="keep only items of this type (perplexity: the tasks are held-out text; extract: "
        "passages answered as JSON, docs/evaluation.md)",
    )
    parser.add_argument(
        "--template",
        default="chat",
        choices=("chat", "plain"),
        help="loglik/cloze prompt: the model's chat template (default) or plain text as lm-eval's MMLU",
    )
    parser.add_argument(
        "--mapping",
        nargs="*",
        default=None,
        metavar="FIELD=COLUMN",
        help="column mapping for other layouts, e.g. question=Stem answer=Key choices=o1,o2,o3",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="first N items (documents for perplexity) per task"
    )
    parser.add_argument(
        "--baseline",
        default=None,
        help="model for relative improvement (default: the first model when several)",
    )
    parser.add_argument(
        "--lm-eval-include",
        metavar="DIR",
        default=None,
        help="folder of your own lm-eval task YAMLs, for lm_eval:<task> names (lm-eval's include_path)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--workers",
        default="auto",
        type=_workers,
        help="batches scored in parallel, one thread each (default auto: one per CPU thread "
        "on machines with up to 4, else 1)",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=16, help="paper protocol answer length"
    )
    parser.add_argument(
        "--dtype", default=None, help="float32, bfloat16, ... (default: float32 on CPU)"
    )
    parser.add_argument(
        "--resamples", type=int, default=1000, help="bootstrap resamples for the 95%% interval"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output",
        default=None,
        help=f"write all results to this JSON file (default: {DEFAULT_OUTPUT_DIR}/<UTC time>.json)",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="recompute even when a cached result exists"
    )
    parser.add_argument(
        "--no-save",
        action="store_true",
        help="write no results file unless --output is given (results stay in the eval cache)",
    )


def parse_mapping(pairs: list[str] | None) -> dict[str, object] | None:
    from alloylm.errors import ConfigError

    if not pairs:
        return None
    mapping: dict[str, object] = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field or not column:
            raise ConfigError(
                f"mapping {pair!r} is not FIELD=COLUMN",
                key="--mapping",
                hint="e.g. question=Stem answer=Key",
            )
        mapping[field] = column.split(",") if field == "choices" else column
    return mapping


def run(args: argparse.Namespace) -> int:
    from alloylm.evals.catalog import resolve_task
    from alloylm.evals.results import format_table, write_results
    from alloylm.evals.runner import EvalSettings, default_baseline, evaluate
    from alloylm.memory_policy import freeze_what_imports_built

    mapping = parse_mapping(args.mapping)
    tasks = [
        resolve_task(
            name,
            type=args.type,
            mapping=mapping,
            limit=args.limit,
            include_path=args.lm_eval_include if name.startswith("lm_eval:") else None,
        )
        for name in args.tasks
    ]
    baseline = default_baseline(args.models, args.baseline)
    settings = EvalSettings(
        protocols=tuple(args.protocol),
        template=args.template,
        batch_size=args.batch_size,
        workers=args.workers,
        max_new_tokens=args.max_new_tokens,
        resamples=args.resamples,
        seed=args.seed,
        baseline=baseline,
        dtype=args.dtype,
        cache=not args.no_cache,
    )
    progress = _progress()
    freeze_what_imports_built(("alloylm.evals.scoring", "transformers.modeling_utils"))
    records = evaluate(args.models, tasks, settings, progress=progress, log=progress.log)
    print(format_table(records))
    output = args.output or (None if args.no_save else default_output())
    if output:
        write_results(output, records, settings=settings.__dict__)
        progress.log(f"wrote {output}")
    return 0


def default_output() -> str:
    """alloy-evals/<UTC time>.json in the current folder: one file per call, never overwritten."""
    import time
    from pathlib import Path

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path, n = Path(DEFAULT_OUTPUT_DIR) / f"{stamp}.json", 1
    while path.exists():
        n += 1
        path = Path(DEFAULT_OUTPUT_DIR) / f"{stamp}-{n}.json"
    return str(path)


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected 'auto' or a whole number >= 1, got {value!r}")


def _progress():  # type: ignore[no-untyped-def]
    try:
        from alloylm.cli.display import RichStageProgress

        return RichStageProgress("eval")
    except ImportError:
        from alloylm.contract import Progress

        return Progress()


if __name__ == "__main__":  # `python -m alloylm.cli.eval`, used by benchmarks/eval_speed.py
    import sys

    from alloylm.errors import AlloyError

    parser = argparse.ArgumentParser(prog="alloy eval")
    add_arguments(parser)
    try:
        sys.exit(run(parser.parse_args()))
    except AlloyError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
