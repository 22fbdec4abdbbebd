"""`alloy`: the command table. Each command module exposes add_arguments(parser) and run(args)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help). Heavy imports happen inside each module's run().
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("alloylm.cli.run", "run a pipeline YAML (skips stages already built)"),
    "validate": ("alloylm.cli.validate", "check a pipeline YAML without running anything"),
    "ls": (
        "alloylm.cli.ls",
        "list stage kinds, merge methods, eval tasks, teachers, model sources",
    ),
    "init": ("alloylm.cli.init", "write a starter pipeline YAML"),
    "models": ("alloylm.cli.models", "list or prepare model sources (embedded, tiny, local)"),
    "lineage": ("alloylm.cli.lineage", "print the chain of an artifact back to its source models"),
    "merge": ("alloylm.cli.merge", "merge models from a merge YAML (native or mergekit format)"),
    "eval": ("alloylm.cli.eval", "evaluate models on benchmark files with one protocol"),
    "distill": ("alloylm.cli.distill", "turn raw domain text into training data with a teacher"),
    "serve": ("alloylm.cli.serve", "serve a model over an OpenAI-compatible HTTP API"),
}

EPILOG = """\
quick start:
  alloy run recipes/quickstart.yaml          the whole chain on the embedded 135M model (CPU)
  alloy validate recipes/quickstart.yaml     check a pipeline before running it
  alloy lineage runs/quickstart/sft          where a model came from

See README.md and docs/ for each stage.
"""


def build_parser() -> argparse.ArgumentParser:
    from alloylm import __version__

    parser = argparse.ArgumentParser(
        prog="alloy",
        description="alloylm: adapt LLMs to a technical domain (distill, CPT, SFT, DPO/ORPO, merge, eval) from one YAML pipeline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"alloylm {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show library logs and full tracebacks"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = sys.argv[1] if len(sys.argv) > 1 else None
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # Only the chosen command's module is imported: `alloy --help` stays fast.
        if name == wanted:
            try:
                module = importlib.import_module(module_name)
            except ImportError as error:
                command.set_defaults(_unavailable=f"command {name!r} is not available: {error}")
                continue
            module.add_arguments(command)
            command.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = ["alloy", *argv]
    parser = build_parser()
    args = parser.parse_args()
    if not args.command:
        parser.print_help()
        return 0
    if getattr(args, "_unavailable", None):
        print(f"error: {args._unavailable}", file=sys.stderr)
        return 2
    _quiet_libraries(args.verbose)
    from alloylm.errors import AlloyError

    try:
        return int(args._module.run(args) or 0)
    except AlloyError as error:
        if args.verbose:
            raise
        print(f"error: {error.render()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished artifacts are kept; run the same command again to continue",
            file=sys.stderr,
        )
        return 130


def _quiet_libraries(verbose: bool) -> None:
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        # Our own per-stage progress replaces the libraries' per-file bars (weights, shards).
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import warnings

        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)


if __name__ == "__main__":
    sys.exit(main())
