"""`alloy study plan FILE` / `alloy study run FILE`: the strategy grid of a `study:` section."""

from __future__ import annotations

import argparse

EPILOG = """\
A study file is a pipeline file with a `study:` section (docs/study.md): start models, strategies
(CPT, CPT-SFT, CPT-SFT-DPO, CPT-SFT-ORPO, SFT, ...), one template per step, the merge partner and
its schedules, ablation axes and the eval tasks. It expands into ordinary stages: `alloy validate`
and `alloy run` take it too.

examples:
  alloy study plan recipes/study_cpu.yaml                    the grid, and what is built
  alloy study run recipes/study_cpu.yaml                     build it, evaluate, write the report
  alloy study run recipes/study_cpu.yaml --parallel 2        independent branches side by side
  alloy study plan recipes/paper/study/llama31_8b.yaml --no-data-check
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    sub = parser.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    plan = sub.add_parser(
        "plan",
        help="print the expanded grid: stage, kind, strategy, parents, built or not",
        description="Expand the study and print every stage it runs; nothing is trained. "
        "'built' means `alloy run` would skip the stage (same content hash).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(plan)
    plan.add_argument("--json", action="store_true", help="print the study plan as JSON")
    from alloylm.cli.memory import add_arguments as memory_arguments

    memory_arguments(plan)  # the memory plan of each training stage, for this launch
    run = sub.add_parser(
        "run",
        help="run the expanded pipeline, then write the report (alloy report)",
        description="Write OUTPUT/study_plan.json, build every stage not built yet (as alloy "
        "run), rewrite the plan, then write the report (OUTPUT/report/).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(run, data_check=False)
    for action in _run_options():
        run.add_argument(*action[0], **action[1])
    run.add_argument("--no-report", action="store_true", help="do not write the report")


def _common(parser: argparse.ArgumentParser, *, data_check: bool = True) -> None:
    parser.add_argument("pipeline", metavar="FILE", help="pipeline YAML with a study: section")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. run.seed=1"
    )
    if data_check:
        parser.add_argument(
            "--no-data-check",
            action="store_true",
            help="do not require data files to exist (recipes for data you will provide)",
        )


def _run_options() -> list[tuple[tuple[str, ...], dict]]:
    """The options of `alloy run` that a study run takes too."""
    scratch = argparse.ArgumentParser(add_help=False)
    from alloylm.cli.run import add_arguments as run_arguments

    run_arguments(scratch)
    options = []
    for action in scratch._actions:
        if not action.option_strings:
            continue
        kwargs = {"help": action.help, "default": action.default, "dest": action.dest}
        if isinstance(action, argparse._StoreTrueAction):
            kwargs["action"] = "store_true"
        elif isinstance(action, argparse._AppendAction):
            kwargs.update(action="append", metavar=action.metavar)
        else:
            kwargs.update(type=action.type, choices=action.choices, metavar=action.metavar)
        options.append((tuple(action.option_strings), kwargs))
    return options


def _load(args: argparse.Namespace, *, check_data: bool = True):
    from alloylm.errors import ConfigError
    from alloylm.pipeline.load import load_pipeline

    pipeline = load_pipeline(args.pipeline, args.overrides, check_data=check_data)
    if pipeline.study is None:
        raise ConfigError(
            "this pipeline file has no study: section",
            file=str(pipeline.file),
            hint="run it with `alloy run`; see docs/study.md for the study: section",
        )
    return pipeline


def run(args: argparse.Namespace) -> int:
    if args.study_command == "plan":
        return plan(args)
    return run_study(args)


def plan(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from alloylm.cli.display import console
    from alloylm.pipeline.parallel import stage_status
    from alloylm.pipeline.study import plan_document

    pipeline = _load(args, check_data=not args.no_data_check)
    document = plan_document(pipeline)
    if args.json:
        from alloylm.cli.memory import plan_rows_json

        print(json.dumps({**document, "memory_plan": plan_rows_json(pipeline, args)}, indent=2))
        return 0
    status = stage_status(pipeline)
    by_stage: dict[str, dict] = {}  # a stage's own model, else its last (a cpt run's last epoch)
    for model in document["models"]:
        held = by_stage.get(model.get("stage") or "")
        if model.get("stage") and (held is None or held["id"] != held["stage"]):
            by_stage[model["stage"]] = model
    notes = document.get("notes") or {}
    table = Table(title=f"study {document['study']} -> {document['output']}", show_lines=False)
    table.add_column("stage", no_wrap=True)
    for column in ("kind", "strategy", "variant", "parents", "status"):
        table.add_column(column)
    for name, state in status.items():
        spec = pipeline.stages[name]
        entry = by_stage.get(name, {})
        strategy = entry.get("strategy", "")
        if strategy in notes or any(step in notes for step in entry.get("steps") or []):
            strategy += " *"
        if entry.get("merged"):
            strategy += f" + merge ({entry.get('schedule')})"
        elif entry.get("role") == "curve":
            strategy += f" + merge at t={entry['t']:g}" + (
                f" x {entry['schedule']}" if entry.get("schedule") else ""
            )
        variant = ", ".join(f"{k}={v}" for k, v in (entry.get("variant") or {}).items())
        parents = ", ".join([*spec.depends_on, *_sources(spec)])
        if name == document["eval_stage"]:
            parents = f"{len(pipeline.stages[name].config.models)} models"
        shown = {"built": "[green]built[/]", "stale": "[yellow]stale[/]", "missing": "to build"}
        table.add_row(name, spec.kind, strategy, variant, parents, shown[state["status"]])
    console.print(table)
    for model in document["models"]:  # models that are not a stage's output: epoch checkpoints
        if model.get("stage") and model["id"] != model["stage"] and model["role"] == "stage":
            console.print(f"  {model['id']}: {model['source']} (saved by {model['stage']})")
    for key, note in notes.items():
        console.print(f"  * {key}: {note}")
    counts = {
        s: sum(v["status"] == s for v in status.values()) for s in ("built", "stale", "missing")
    }
    roles = {
        r: sum(m["role"] == r for m in document["models"])
        for r in ("start", "partner", "stage", "merge", "curve")
    }
    console.print(
        f"{len(status)} stages: {counts['built']} built, {counts['stale']} stale (rebuilt on run), "
        f"{counts['missing']} to build. Models evaluated: {roles['start']} start, "
        f"{roles['partner']} partner, {roles['stage']} stage, {roles['merge']} merges, "
        f"{roles['curve']} curve points "
        f"(baseline {document['baseline']})."
    )
    from alloylm.cli.memory import print_plan

    print_plan(pipeline, args)
    return 0


def _sources(spec) -> list[str]:
    """Model sources a stage reads that are not other stages (start models, the partner)."""
    inputs = spec.module.inputs(spec.config)
    return [item.value for item in inputs if item.kind == "model" and "${stages." not in item.value]


def run_study(args: argparse.Namespace) -> int:
    from alloylm.cli.display import console, summary_table
    from alloylm.cli.run import execute

    pipeline = _load(args, check_data=True)
    outcomes = execute(pipeline, args)
    console.print(summary_table(outcomes, f"study {pipeline.study.name} -> {pipeline.output_dir}"))
    if any(o.status == "failed" for o in outcomes):
        return 1
    if args.no_report:
        return 0
    try:
        from alloylm.analysis.report import write_report
    except ImportError as error:
        console.print(
            f"no report: alloylm.analysis.report is not available in this installation ({error}). "
            f"The plan is {pipeline.output_dir / 'study_plan.json'}, the scores are in "
            f"{pipeline.output_dir / pipeline.study.eval_stage}/results.json."
        )
        return 0
    import time

    started = time.perf_counter()
    path = write_report(pipeline.output_dir)
    elapsed = time.perf_counter() - started
    try:
        from alloylm.cli.report import print_summary
    except ImportError:
        pass
    else:
        print_summary(path)  # the headline tables in the terminal
    console.print(f"report: {path}  ({elapsed:.1f} s)")
    return 0
