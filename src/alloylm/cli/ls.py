"""`alloy ls`: every name alloylm knows, from the one registry."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "table",
        nargs="?",
        help="only this table (e.g. 'stage', 'merge', 'eval', 'teacher', 'model')",
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from alloylm.registry import ALL_TABLES

    console = Console(emoji=False)
    shown = 0
    for registry in ALL_TABLES:
        if args.table and args.table.lower() not in registry.kind:
            continue
        table = Table(title=f"{registry.kind}s", title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("what it does")
        for name, entry in registry.items():
            table.add_row(name, entry.summary)
        console.print(table)
        shown += 1
    if not shown:
        from alloylm.errors import AlloyError

        raise AlloyError(
            f"no table matches {args.table!r}", hint="alloy ls (no argument) shows them all"
        )
    return 0
