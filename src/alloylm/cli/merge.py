"""`alloy merge CONFIG OUTPUT_DIR` (the arguments mergekit-yaml takes) and `alloy merge explain CONFIG`.

CONFIG is native merge YAML (docs/merge.md) or mergekit's own YAML, unchanged. With a sweep,
each variant is written to OUTPUT_DIR/<variant>/. Heavy imports happen inside `run`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Merge models (SLERP with the study's per-layer schedule by default); or `explain CONFIG`."
    )
    parser.add_argument("config", help="merge YAML (native or mergekit format), or `explain`")
    parser.add_argument("output_dir", nargs="?", help="output folder (for `explain`: the CONFIG)")
    parser.add_argument("--dtype", help="override dtype (inputs cast to it, output written in it)")
    parser.add_argument("--seed", type=int, help="override the seed (DARE drops)")
    parser.add_argument("--max-shard-size", help="largest output shard, e.g. 2GB (default 5GB)")
    parser.add_argument(
        "--layers", type=int, help="explain: number of layers (default: read from the base model)"
    )
    parser.add_argument(
        "--plot", help="explain: where to write the PNG (default: <config stem>-schedule.png)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per tensor while merging (default 1: merging is memory-bound; "
        "0 = torch's default)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="tensors merged at once, one thread each (default 0 = one per CPU, at most 4; "
        "an embedding-sized tensor is always merged alone)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.config == "explain":
        if not args.output_dir:
            from alloylm.errors import ConfigError

            raise ConfigError("usage: alloy merge explain CONFIG [--layers N] [--plot FILE]")
        return _explain(Path(args.output_dir), args.layers, args.plot)
    if not args.output_dir:
        from alloylm.errors import ConfigError

        raise ConfigError(
            "usage: alloy merge CONFIG OUTPUT_DIR", hint="or: alloy merge explain CONFIG"
        )
    return _merge(Path(args.config), Path(args.output_dir), args)


def _load(config: Path, args: argparse.Namespace | None = None):
    from alloylm.merge.yaml_file import load_merge_yaml

    settings = load_merge_yaml(config)
    overrides = {}
    if args is not None:
        for key in ("dtype", "seed", "max_shard_size"):
            if getattr(args, key, None) is not None:
                overrides[key] = getattr(args, key)
    if not overrides:
        return settings
    from alloylm.merge.config import settings_from_dict

    # validated like the file's own keys (model_copy would take `--max-shard-size 5XB` unchecked)
    return settings_from_dict(
        {**settings.model_dump(exclude_none=True), **overrides}, file=str(config)
    )


def _merge(config: Path, output_dir: Path, args: argparse.Namespace) -> int:
    import contextlib

    from alloylm.memory_policy import freeze_what_imports_built, reuse_freed_memory

    reuse_freed_memory()
    freeze_what_imports_built(("alloylm.merge.engine", "alloylm.merge.artifacts"))
    from alloylm.atomic import atomic_directory
    from alloylm.merge.artifacts import write_variant_manifest
    from alloylm.merge.engine import MergeOutput, prepare_merge, run_merge
    from alloylm.models.sources import resolve_model

    started = time.perf_counter()
    settings = _load(config, args)
    prepared = prepare_merge(settings, resolve_model)
    variants = settings.variants()
    sweep = settings.sweep is not None
    with contextlib.ExitStack() as stack:
        targets = [output_dir / name if sweep else output_dir for name, _ in variants]
        folders = [stack.enter_context(atomic_directory(t)) for t in targets]
        outputs = [
            MergeOutput(name, params, folder)
            for (name, params), folder in zip(variants, folders, strict=True)
        ]
        reports = run_merge(
            settings,
            outputs,
            prepared=prepared,
            progress=_progress(args.quiet),
            threads=args.threads or None,
            workers=args.workers or None,
        )
        elapsed = time.perf_counter() - started
        for report, output in zip(reports, outputs, strict=True):
            write_variant_manifest(
                output.folder,
                prepared,
                report,
                output.parameters,
                stage=report.name or "merge",
                wall_time_s=elapsed,
            )
    for report, target in zip(reports, targets, strict=True):
        s = report.summary()
        line = f"{target}: {s['tensors']} tensors"
        if "linear_fallback_tensors" in s:
            line += f", linear fallback in {s['linear_fallback_tensors']} ({100 * s['linear_fallback_fraction']:.1f}%), t in [{s['t_min']:g}, {s['t_max']:g}]"
        print(line)
    print(f"merged in {time.perf_counter() - started:.1f} s")
    return 0


def _progress(quiet: bool):
    from alloylm.contract import Progress

    if quiet or not sys.stderr.isatty():
        return Progress()
    return _RichProgress()


class _RichProgress:
    """A rich progress bar over tensors (only on a terminal)."""

    def __init__(self) -> None:
        from rich.progress import Progress as RichBar

        self._bar = RichBar(transient=True)
        self._task = None

    def start(self, total, description=""):
        self._bar.start()
        self._task = self._bar.add_task(description, total=total)

    def update(self, step, **fields):
        self._bar.update(self._task, completed=step)

    def log(self, message):
        self._bar.console.print(message)

    def finish(self):
        self._bar.stop()


def _explain(config: Path, layers: int | None, plot: str | None) -> int:
    from alloylm.merge.explain import format_table, plot_schedule, schedule_rows, slice_layout

    settings = _load(config)
    if layers is None:
        layers = _base_layers(settings)
    rows = schedule_rows(settings, layers)
    print(f"{config}: method {settings.method}, {layers} layers")
    for line in slice_layout(settings):
        print(line)
    print(format_table(rows))
    if all(row.attention == "-" for variant in rows.values() for row in variant):
        return 0  # no t to plot (passthrough, linear, ...)
    path = plot_schedule(rows, Path(plot) if plot else Path(f"{config.stem}-schedule.png"))
    print(f"plot: {path}")
    return 0


def _base_layers(settings) -> int:
    from alloylm.merge.checks import num_layers, read_config
    from alloylm.merge.jobs import output_layers
    from alloylm.models.sources import resolve_model

    if settings.slices:
        return output_layers(settings)
    base = settings.model_inputs()[0].model
    layers = num_layers(read_config(resolve_model(base)))
    if layers is None:
        from alloylm.errors import ConfigError

        raise ConfigError(f"cannot tell the number of layers of {base}", hint="give --layers N")
    return layers


def main(argv: list[str] | None = None) -> int:
    """Run this command alone: `python -m alloylm.cli.merge CONFIG OUTPUT_DIR`."""
    from alloylm.errors import AlloyError

    parser = argparse.ArgumentParser(prog="alloy merge")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except AlloyError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
