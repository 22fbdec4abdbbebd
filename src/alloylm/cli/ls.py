"""`alloy ls`: every name alloylm knows, from the one registry."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "table",
        nargs="?",
        help="only this table (e.g. 'stage', 'merge', 'eval', 'teacher', 'model')",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {table: [{"name", "summary"}, ...]} as JSON, for scripts',
    )


def run(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table
    from rich.text import Text

    from alloylm.cli.display import add_name_column, output_console
    from alloylm.registry import ALL_TABLES

    chosen = [
        registry for registry in ALL_TABLES if not args.table or args.table.lower() in registry.kind
    ]
    if not chosen:
        from alloylm.errors import AlloyError

        raise AlloyError(
            f"no table matches {args.table!r}", hint="alloy ls (no argument) shows them all"
        )
    if args.json:
        document = {
            registry.kind: [
                {"name": name, "summary": entry.summary} for name, entry in registry.items()
            ]
            for registry in chosen
        }
        print(json.dumps(document, indent=2))
        return 0
    console = output_console()
    for registry in chosen:
        table = Table(title=f"{registry.kind}s", title_justify="left")
        add_name_column(table, "name", style="bold")
        table.add_column("what it does")
        for name, entry in registry.items():
            table.add_row(Text(name), Text(entry.summary))
        console.print(table)
    return 0
