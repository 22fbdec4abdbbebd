"""`alloy converse SCRIPT MODEL... -o DIR`: a conversation script against many models.

SCRIPT is a YAML file or a shipped script's name (collagen_leaves, image_prompt). Each model
answers every turn; DIR gets `<model>.json` and `<model>.md` per model and `summary.json`.
"""

from __future__ import annotations

import argparse

SAMPLING_OPTIONS = ("seed", "max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("script", help="a conversation YAML, or collagen_leaves / image_prompt")
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="model sources: embedded:..., tiny:llama, folders",
    )
    parser.add_argument("-o", "--out", required=True, help="folder for the transcripts")
    parser.add_argument(
        "--name", action="append", default=None, help="display name, once per MODEL, in order"
    )
    parser.add_argument("--preset", default=None, help="sampling preset (default: the script's)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--repetition-penalty", type=float, default=None)
    parser.add_argument(
        "--dtype", default=None, help="e.g. bfloat16 on a GPU (default: the model's)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pydantic import ValidationError

    from alloylm.chat.conversations import converse, load_script
    from alloylm.cli.display import add_name_column, output_console
    from alloylm.errors import ConfigError
    from alloylm.models.sources import resolve_model

    if args.name is not None and len(args.name) != len(args.models):
        raise ConfigError(
            f"{len(args.name)} --name for {len(args.models)} models",
            key="--name",
            hint="give one --name per MODEL, in the same order, or none",
        )
    loaded = load_script(args.script)
    overrides = {"preset": args.preset, **{k: getattr(args, k) for k in SAMPLING_OPTIONS}}
    try:
        settings = loaded.script.generation.merged(overrides)
        settings.params()
    except ValidationError as error:
        first = error.errors()[0]
        option = "--" + str(first["loc"][0]).replace("_", "-")
        raise ConfigError(f"{first['msg']} (got {first.get('input')!r})", key=option) from None
    except ValueError as error:  # an unknown preset
        raise ConfigError(str(error), key="--preset") from None
    models = [(source, resolve_model(source)) for source in args.models]
    out = Path(args.out)
    result = converse(
        loaded,
        models,
        out,
        settings=settings,
        names=args.name,
        dtype=args.dtype,
        threads=args.threads,
        log=lambda message: print(message, flush=True),
    )
    from rich.table import Table

    table = Table(title=f"{loaded.script.name}: {len(loaded.script.turns)} turns")
    add_name_column(table, "model")
    add_name_column(table, "lineage")
    for header in ("JSON valid", "tokens", "seconds", "transcript"):
        table.add_column(header)
    for row in result.summary["models"]:
        table.add_row(
            row["model"],
            str(row["lineage"] or "")[:24],
            f"{row['json_valid']}/{row['json_turns']}",
            str(row["completion_tokens"]),
            f"{row['generate_s']:.1f}",
            str(out / row["files"]["markdown"]),
        )
    output_console().print(table)
    for row in result.summary["models"]:
        for problem in row["json_problems"]:
            detail = problem["error"] or "; ".join(problem["schema_errors"])
            print(f"{row['model']}: turn {problem['turn'] + 1}: invalid JSON: {detail}")
    return 0
