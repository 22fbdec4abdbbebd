"""`alloy run PIPELINE [KEY=VALUE ...]`: run every stage that is not built yet."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = """\
examples:
  alloy run recipes/quickstart.yaml
  alloy run p.yaml stages.sft.train.learning_rate=1e-5      dotted override
  alloy run p.yaml --force sft                                rebuild one stage (and what follows)
  alloy run p.yaml --only eval                                run one stage, inputs must exist
  alloy run p.yaml --launcher accelerate --num-processes 8 --config-file configs/accelerate/deepspeed_zero3.yaml

Stages already built with the same content hash are skipped. An interrupted run (Ctrl-C, kill -9)
leaves no half-written artifact; run the same command again to continue.
"""
    parser.add_argument("pipeline", help="pipeline YAML file")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. run.seed=1"
    )
    parser.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="STAGE",
        help="rebuild STAGE even if built (repeatable)",
    )
    parser.add_argument(
        "--only", action="append", default=None, metavar="STAGE", help="run only STAGE (repeatable)"
    )
    parser.add_argument(
        "--launcher",
        choices=["accelerate", "torchrun"],
        help="run training stages under this launcher",
    )
    parser.add_argument(
        "--num-processes", type=int, default=1, help="processes for --launcher (default 1)"
    )
    parser.add_argument("--config-file", help="accelerate config file (see configs/accelerate/)")


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from alloylm.cli.display import RichStageProgress, console, summary_table
    from alloylm.config.pipeline import load_pipeline
    from alloylm.pipeline.runner import Launcher, PipelineRunner

    pipeline = load_pipeline(args.pipeline, args.overrides)
    force = set(args.force)
    # Forcing a stage also rebuilds what depends on it: their inputs change.
    launcher = Launcher(args.launcher, args.num_processes, args.config_file)

    def on_event(event: str, outcome) -> None:
        if event == "skipped":
            console.print(
                "[cyan]skip[/]  "
                + escape(f"{outcome.name} ({outcome.kind}): already built at {outcome.path}")
            )
        elif event == "start":
            console.print(f"[bold]build[/] {outcome.name} ({outcome.kind})")
        elif event == "built":
            console.print(
                f"[green]done[/]  {outcome.name} in {outcome.wall_s:,.1f} s -> {outcome.path}"
            )
        elif event == "failed":
            console.print("[red]fail[/]  " + escape(f"{outcome.name}: {outcome.error}"))

    runner = PipelineRunner(
        pipeline,
        force=force,
        only=set(args.only) if args.only else None,
        launcher=launcher,
        progress_factory=RichStageProgress,
        on_event=on_event,
    )
    outcomes = runner.run()
    console.print(summary_table(outcomes, f"run {pipeline.run.name} -> {pipeline.output_dir}"))
    return 1 if any(o.status == "failed" for o in outcomes) else 0
