"""`alloy`: the command table. Each command module exposes add_arguments(parser) and run(args)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import sys

# name -> (module, one-line help). Heavy imports happen inside each module's run().
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("alloylm.cli.run", "run a pipeline YAML (skips stages already built)"),
    "validate": ("alloylm.cli.validate", "check a pipeline YAML without running anything"),
    "study": (
        "alloylm.cli.study",
        "plan or run a study (the strategy grid of a study: section), then its report",
    ),
    "ls": (
        "alloylm.cli.ls",
        "list stage kinds, merge methods, eval tasks, teachers, model sources",
    ),
    "init": ("alloylm.cli.init", "write a starter pipeline YAML"),
    "models": ("alloylm.cli.models", "list or prepare model sources (embedded, tiny, local)"),
    "lineage": ("alloylm.cli.lineage", "print the chain of an artifact back to its source models"),
    "report": ("alloylm.cli.report", "write a study's report: offline HTML, study.json, CSV"),
    "merge": ("alloylm.cli.merge", "merge models from a merge YAML (native or mergekit format)"),
    "eval": ("alloylm.cli.eval", "evaluate models on benchmark files with one protocol"),
    "distill": ("alloylm.cli.distill", "turn raw domain text into training data with a teacher"),
    "serve": ("alloylm.cli.serve", "serve a model over an OpenAI-compatible HTTP API"),
    "chat": ("alloylm.cli.chat", "chat with one or more models in the terminal, side by side"),
    "converse": (
        "alloylm.cli.converse",
        "run a conversation script against models: one transcript each",
    ),
    "judge": ("alloylm.cli.judge", "grade or compare transcripts with an LLM judge"),
    "export": ("alloylm.cli.export", "export a model to GGUF (llama.cpp, Ollama) with lineage"),
    "render": ("alloylm.cli.render", "render an image prompt with FLUX + LoRA (diffusers, CUDA)"),
}

EPILOG = """\
quick start:
  alloy run recipes/quickstart.yaml          the whole chain on the embedded 135M model (CPU)
  alloy validate recipes/quickstart.yaml     check a pipeline before running it
  alloy lineage runs/quickstart/sft          where a model came from

See README.md and docs/ for each stage.
"""


def _add_verbose(parser: argparse.ArgumentParser, default: object = False) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="show library logs and full tracebacks",
    )


def chosen_command(argv: list[str]) -> str | None:
    """The command `argv` names, found by parsing (options may come before or after it).

    A throw-away parser that knows the global options and the command names, and nothing of
    the commands' own arguments, so that no command module has to be imported to find it.
    """
    finder = argparse.ArgumentParser(prog="alloy", add_help=False, exit_on_error=False)
    _add_verbose(finder)
    finder.add_argument("-h", "--help", action="store_true")
    finder.add_argument("--version", action="store_true")
    names = finder.add_subparsers(dest="command")
    for name in COMMANDS:
        names.add_parser(name, add_help=False)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            found, _ = finder.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):
        return None  # the real parser reports the mistake
    return found.command


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    from alloylm import __version__

    parser = argparse.ArgumentParser(
        prog="alloy",
        description="alloylm: adapt LLMs to a technical domain (distill, CPT, SFT, DPO/ORPO, merge, eval) from one YAML pipeline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"alloylm {__version__}")
    _add_verbose(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = chosen_command(sys.argv[1:] if argv is None else argv)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # `alloy run -v p.yaml` as well as `alloy -v run p.yaml`; SUPPRESS keeps a -v given
        # before the command when none follows it.
        _add_verbose(command, default=argparse.SUPPRESS)
        # Only the chosen command's module is imported: `alloy --help` stays fast.
        if name == wanted:
            try:
                module = importlib.import_module(module_name)
            except ImportError as error:
                command.set_defaults(_unavailable=f"command {name!r} is not available: {error}")
                continue
            module.add_arguments(command)
            _verbose_in_actions(command)
            command.set_defaults(_module=module)
    return parser


def _verbose_in_actions(command: argparse.ArgumentParser) -> None:
    """-v after an action too (`alloy models ls -v`), for commands with their own subcommands."""
    for action in command._actions:
        if isinstance(action, argparse._SubParsersAction):
            for action_parser in action.choices.values():
                _add_verbose(action_parser, default=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
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
    except OSError as error:  # disk full, read-only, permissions: the user's to fix
        from alloylm.errors import storage_error

        storage = storage_error(error)
        if storage is None or args.verbose:
            raise
        print(f"error: {storage.render()}", file=sys.stderr)
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
