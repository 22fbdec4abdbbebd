"""`alloy distill run CONFIG` and `alloy distill stats PATH`.

`run` takes a YAML holding either one distill stage's keys or a pipeline (its distill stage is
picked with --stage when there are several) and writes the JSONL files into --out; the call
cache lives in <out>/.distill-state, so rerunning resumes. `stats` reads stats.json from an
output folder, or the run log of a cache file (distill-cache.sqlite).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from alloylm.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="distill_command", required=True)
    run_parser = sub.add_parser("run", help="run a distillation from a YAML file")
    run_parser.add_argument(
        "config", help="YAML with a distill stage's keys, or a pipeline with a distill stage"
    )
    run_parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides for a pipeline YAML (before --out), e.g. stages.distill.max_chunks=2",
    )
    run_parser.add_argument(
        "--stage", default=None, help="name of the distill stage in a pipeline YAML"
    )
    run_parser.add_argument(
        "--out",
        required=True,
        help="folder for sft.jsonl / preference.jsonl / cpt.jsonl / stats.json",
    )
    run_parser.add_argument(
        "--seed", type=int, default=None, help="seed (default: run.seed of the pipeline, else 42)"
    )
    stats_parser = sub.add_parser(
        "stats", help="counts per generator, rejects by reason, tokens spent"
    )
    stats_parser.add_argument(
        "path", help="an output folder (stats.json) or a distill-cache.sqlite file / state folder"
    )
    stats_parser.add_argument("--json", action="store_true", help="print the raw JSON")


def run(args: argparse.Namespace) -> int:
    if args.distill_command == "run":
        return _run(args)
    return _stats(args)


def _resolve(value: Any, file: Path) -> Any:
    """A bare stage mapping read as the pipeline loader reads a stage: ${data} (alias
    ${shared_data}) substituted, relative paths made absolute against the YAML's folder."""
    from alloylm.config.pipeline import stage_references
    from alloylm.pipeline.load import resolve_bare_stage

    for _, where in stage_references(value):
        raise ConfigError(
            "`alloy distill run` cannot resolve ${stages...} references",
            file=str(file),
            key=".".join(map(str, where)) or None,
            hint="use `alloy run` for a pipeline",
        )
    return resolve_bare_stage(value, file)


def load_stage_config(
    path: Path, stage: str | None, overrides: list[str] | None = None
) -> tuple[Any, int | None]:
    """(validated distill Config, pipeline seed) from a pipeline YAML or a bare stage YAML."""
    import yaml
    from pydantic import ValidationError

    from alloylm.stages.distill import Config

    if not path.is_file():
        raise ConfigError("config file not found", file=str(path))
    data = yaml.safe_load(path.read_text()) or {}
    if isinstance(data, dict) and "stages" in data:
        from alloylm.pipeline.load import load_pipeline

        pipeline = load_pipeline(path, overrides or [], check_data=False)
        distills = {n: s for n, s in pipeline.stages.items() if s.kind == "distill"}
        if stage is None and len(distills) == 1:
            stage = next(iter(distills))
        if stage not in distills:
            raise ConfigError(
                "pick the distill stage with --stage"
                if stage is None
                else f"no distill stage named {stage!r}",
                file=str(path),
                key="stages",
                hint=f"distill stages: {', '.join(distills) or 'none'}",
            )
        return distills[stage].config, pipeline.run.seed
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of distill stage keys", file=str(path))
    if overrides:
        raise ConfigError(
            "KEY=VALUE overrides need a pipeline YAML (run: + stages:)", file=str(path)
        )
    data = {"kind": "distill", **_resolve(data, path.resolve())}
    try:
        return Config.model_validate(data), None
    except ValidationError as error:
        first = error.errors()[0]
        raise ConfigError(
            first["msg"], file=str(path), key=".".join(map(str, first["loc"])) or None
        ) from None


def _run(args: argparse.Namespace) -> int:
    from alloylm.distill.engine import run_distill

    cfg, seed = load_stage_config(Path(args.config), args.stage, args.overrides)
    out = Path(args.out)
    result = run_distill(
        cfg, out, out / ".distill-state", seed=args.seed if args.seed is not None else (seed or 42)
    )
    print_stats(result.stats)
    return 0


def _load_stats(path: Path) -> dict[str, Any]:
    if path.is_dir() and (path / "stats.json").is_file():
        return json.loads((path / "stats.json").read_text())
    candidates = (
        [path]
        if path.is_file()
        else [*path.glob("distill-cache.sqlite"), *path.glob(".distill-state/distill-cache.sqlite")]
    )
    if not candidates:
        raise ConfigError(
            "no stats.json or distill-cache.sqlite here",
            file=str(path),
            hint="pass a distill output folder or its state folder",
        )
    from alloylm.distill.cache import CallCache

    cache = CallCache(candidates[0])
    try:
        runs = cache.runs()
        totals = cache.totals()
    finally:
        cache.close()
    if not runs:
        raise ConfigError("the cache holds no runs", file=str(candidates[0]))
    last = runs[-1]
    stats = dict(last["stats"] or {})
    stats.setdefault("status", last["status"])
    stats["cache"] = totals
    stats["runs"] = len(runs)
    return stats


def print_stats(stats: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"distill: {stats.get('status', '?')}")
    table.add_column("generator")
    table.add_column("done", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("records", justify="right")
    units = stats.get("units", {})
    records = stats.get("records_per_generator", {})
    for name in sorted(set(units) | set(records)):
        table.add_row(
            name,
            str(units.get(name, {}).get("done", 0)),
            str(units.get(name, {}).get("failed", 0)),
            str(records.get(name, 0)),
        )
    console.print(table)
    for reason, count in sorted(stats.get("rejects", {}).items()):
        console.print(f"  rejected {reason}: {count}")
    teacher = stats.get("teacher", {})
    if teacher:
        console.print(
            f"teacher calls {teacher.get('calls_made', 0)} (cached {teacher.get('cache_hits', 0)}), "
            f"tokens spent {teacher.get('prompt_tokens', 0)} prompt + {teacher.get('completion_tokens', 0)} completion"
        )
    if "cache" in stats:
        console.print(f"cache: {stats['cache']}")
    if stats.get("outputs"):
        console.print(f"outputs: {stats['outputs']}")


def _stats(args: argparse.Namespace) -> int:
    stats = _load_stats(Path(args.path))
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print_stats(stats)
    return 0


__all__ = ["add_arguments", "run", "load_stage_config"]
