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
  alloy run p.yaml --launcher accelerate --num-processes 8 --config-file deepspeed_zero3
  alloy run p.yaml --parallel 2                               independent stages side by side
  alloy run p.yaml --launcher torchrun --num-processes 8 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1
                                                              node 0 (the same with --node-rank 1 on node 1)
  alloy run recipes/study_cpu.yaml                            a study file runs its whole grid

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
    parser.add_argument(
        "--config-file",
        help="accelerate config file, or a shipped one by name: ddp, fsdp, fsdp2, deepspeed_zero3, "
        "multinode",
    )
    parser.add_argument(
        "--nnodes",
        type=int,
        default=1,
        help="machines in the launch (torchrun or accelerate); run the same command on each",
    )
    parser.add_argument(
        "--node-rank",
        type=int,
        default=0,
        help="this machine's rank: 0 runs the pipeline, the others only join its training launches",
    )
    parser.add_argument(
        "--master-addr", default="127.0.0.1", help="address of node 0, reachable from every node"
    )
    parser.add_argument("--master-port", type=int, default=29500, help="a free port on node 0")
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="N",
        help="run up to N independent stages at once, each in its own process on its own group of "
        "GPUs (CUDA_VISIBLE_DEVICES); on CPU the cores are shared out. Logs: OUTPUT/.alloy/logs/",
    )
    parser.add_argument(
        "--devices",
        metavar="IDS",
        help="GPU ids to share out with --parallel, e.g. 0,1,2,3 (default: all visible)",
    )


def run(args: argparse.Namespace) -> int:
    from alloylm.cli.display import console, summary_table
    from alloylm.pipeline.load import load_pipeline

    pipeline = load_pipeline(args.pipeline, args.overrides)
    outcomes = execute(pipeline, args)
    console.print(summary_table(outcomes, f"run {pipeline.run.name} -> {pipeline.output_dir}"))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def _nodes(args: argparse.Namespace):
    """The launch's machines, or None for one machine."""
    from alloylm.errors import ConfigError
    from alloylm.pipeline.launch import Nodes

    count = getattr(args, "nnodes", 1)
    if count == 1:
        return None
    if count < 1 or not 0 <= args.node_rank < count:
        raise ConfigError(
            f"--node-rank must be in 0..{count - 1} for --nnodes {count}", key="--node-rank"
        )
    if not args.launcher or getattr(args, "parallel", 1) > 1:
        raise ConfigError(
            "--nnodes needs --launcher (torchrun or accelerate) and no --parallel",
            key="--nnodes",
            hint="e.g. alloy run p.yaml --launcher torchrun --num-processes 8 --nnodes 2 "
            "--node-rank 0 --master-addr 10.0.0.1",
        )
    return Nodes(count, args.node_rank, args.master_addr, args.master_port)


def execute(pipeline, args: argparse.Namespace) -> list:
    """Run a loaded pipeline with the options of `alloy run` (also used by `alloy study run`)."""
    from rich.markup import escape

    from alloylm.cli.display import RichStageProgress, console
    from alloylm.errors import ConfigError
    from alloylm.pipeline.runner import Launcher, PipelineRunner

    if getattr(pipeline, "study", None) is not None:
        from alloylm.pipeline.study import write_plan

        write_plan(pipeline)  # before any stage runs: the grid as planned
    force = set(args.force)
    # Forcing a stage also rebuilds what depends on it: their inputs change.
    nodes = _nodes(args)
    launcher = Launcher(args.launcher, args.num_processes, args.config_file, nodes)
    if nodes is not None and nodes.rank > 0:  # only node 0 runs the pipeline (see launch.py)
        from alloylm.pipeline.launch import follow_node_zero

        console.print(f"node {nodes.rank}: joining the training launches of node 0")
        joined = follow_node_zero(pipeline.output_dir, args.launcher, args.num_processes, nodes)
        console.print(f"node {nodes.rank}: node 0 finished; joined {joined} launch(es)")
        return []

    def on_event(event: str, outcome) -> None:
        if event == "skipped":
            console.print(
                "[cyan]skip[/]  "
                + escape(f"{outcome.name} ({outcome.kind}): already built at {outcome.path}")
            )
        elif event == "start":
            where = ""
            if getattr(args, "parallel", 1) > 1:
                where = " on " + ", ".join(
                    f"{k}={v}" for k, v in outcome.metrics.items() if k != "slot"
                )
            console.print(f"[bold]build[/] {outcome.name} ({outcome.kind}){escape(where)}")
        elif event == "built":
            console.print(
                f"[green]done[/]  {outcome.name} in {outcome.wall_s:,.1f} s -> {outcome.path}"
            )
        elif event == "failed":
            console.print("[red]fail[/]  " + escape(f"{outcome.name}: {outcome.error}"))

    parallel = getattr(args, "parallel", 1)
    if parallel > 1:
        from alloylm.pipeline.parallel import (
            device_groups,
            run_parallel,
            slot_environments,
            visible_devices,
        )

        if force or args.only:
            raise ConfigError(
                "--parallel runs every stage that is not built; it does not take --force or --only",
                key="--parallel",
                hint="rebuild or run single stages without --parallel",
            )
        per_group = args.num_processes if args.launcher else None
        groups = device_groups(parallel, visible_devices(args.devices), per_group)
        command = [str(pipeline.file), *args.overrides]
        if args.launcher:
            command += ["--launcher", args.launcher, "--num-processes", str(args.num_processes)]
            if args.config_file:
                command += ["--config-file", args.config_file]
        outcomes = run_parallel(pipeline, command, slot_environments(groups), on_event=on_event)
    else:
        runner = PipelineRunner(
            pipeline,
            force=force,
            only=set(args.only) if args.only else None,
            launcher=launcher,
            progress_factory=RichStageProgress,
            on_event=on_event,
        )
        if nodes is None:
            outcomes = runner.run()
        else:
            from alloylm.pipeline.launch import begin_session, end_session

            session = begin_session(pipeline.output_dir)
            outcomes = []
            try:
                outcomes = runner.run()
            finally:
                end_session(
                    pipeline.output_dir, session, ok=not any(o.status == "failed" for o in outcomes)
                )
    if getattr(pipeline, "study", None) is not None:
        write_plan(pipeline)
    return outcomes
