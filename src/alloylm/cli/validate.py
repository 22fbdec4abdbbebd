"""`alloy validate PIPELINE`: every check `alloy run` makes before work starts, and nothing else."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", help="pipeline YAML file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides")
    parser.add_argument(
        "--no-data-check",
        action="store_true",
        help="do not require data files to exist (recipes for data you will provide)",
    )
    from alloylm.cli.memory import add_arguments as memory_arguments

    memory_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from alloylm.cli.memory import device_memory, launch_from_args
    from alloylm.pipeline.graph import topological_order
    from alloylm.pipeline.load import load_pipeline

    device_memory(args)  # a bad --device-memory or --config-file is refused before anything else
    launch_from_args(args)
    pipeline = load_pipeline(args.pipeline, args.overrides, check_data=not args.no_data_check)
    order = topological_order(pipeline)
    print(f"{pipeline.file}: valid; {len(order)} stages, output {pipeline.output_dir}")
    width = max(16, *(len(name) for name in order))
    for name in order:
        spec = pipeline.stages[name]
        after = f" <- {', '.join(spec.depends_on)}" if spec.depends_on else ""
        print(f"  {name:<{width}} {spec.kind:<8}{after}")
    if getattr(pipeline, "study", None) is not None:
        study = pipeline.study
        print(
            f"study {study.name}: {len(study.stages)} generated stages, "
            f"{len({m['eval_index'] for m in study.models})} models evaluated by {study.eval_stage!r}; "
            f"the grid with what is built: alloy study plan {args.pipeline}"
        )
    from alloylm.cli.memory import print_plan

    print_plan(pipeline, args)
    return 0
