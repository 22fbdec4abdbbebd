"""`alloy models ls|prepare`: model sources and the local cache."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    listing = sub.add_parser(
        "ls",
        help="list embedded, tiny and cached models with size, architecture, vocab, chat template",
    )
    listing.add_argument(
        "--json", action="store_true", help="print one JSON object per model source, for scripts"
    )
    prepare = sub.add_parser(
        "prepare", help="convert/cache a model source now (e.g. embedded:smollm2-135m-instruct)"
    )
    prepare.add_argument(
        "source", help="model source: embedded:NAME, tiny:llama, a .gguf file, a folder or a hub id"
    )


def model_rows() -> list[dict[str, Any]]:
    """One row per known model source: embedded, tiny (built or not) and converted GGUF files."""
    from alloylm.models.embedded import EMBEDDED_MODELS, embedded_folder
    from alloylm.models.home import models_cache
    from alloylm.models.loading import describe_model_folder

    rows: list[dict[str, Any]] = []

    def add(source: str, folder: Path | None, note: str = "") -> None:
        row: dict[str, Any] = {"source": source, "path": str(folder) if folder else None}
        if folder is not None and (folder / "config.json").exists():
            row.update(state="ready", **describe_model_folder(folder))
        else:
            row.update(state=note or "not prepared")
        rows.append(row)

    for name in EMBEDDED_MODELS:
        add(f"embedded:{name}", embedded_folder(name), f"run: alloy models prepare embedded:{name}")
    cache = models_cache()
    for folder in sorted(cache.glob("tiny-*")):
        add(
            "tiny:" + folder.name[len("tiny-") :].replace("-seed0", "").replace("-seed", ":"),
            folder,
        )
    if not any(cache.glob("tiny-*")):
        add("tiny:llama", None, "built on first use (seconds)")
    for folder in sorted(cache.glob("gguf-*")):
        add(str(folder), folder)
    return rows


def run(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table
    from rich.text import Text

    from alloylm.cli.display import add_name_column, output_console
    from alloylm.models.home import models_cache
    from alloylm.models.sources import resolve_model

    console = output_console()
    if args.models_command == "prepare":
        path = resolve_model(args.source)
        console.print(Text(f"{args.source} -> {path}"))
        return 0
    rows = model_rows()
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=Text(f"model sources (cache: {models_cache()})"), title_justify="left")
    add_name_column(table, "source")
    table.add_column("state", overflow="fold")
    for column in ("architecture", "layers", "vocab", "size", "chat template"):
        table.add_column(column)
    for row in rows:
        if row["state"] != "ready":
            table.add_row(Text(row["source"]), Text(row["state"]), "", "", "", "", "")
            continue
        table.add_row(
            Text(row["source"]),
            "ready",
            row["architecture"],
            str(row["layers"]),
            f"{row['vocab']:,}",
            f"{row['size_bytes'] / 2**20:,.0f} MiB",
            "yes" if row["chat_template"] else "no",
        )
    console.print(table)
    console.print(
        "Also accepted: any local Hugging Face folder, a .gguf file, or a hub id (needs network)."
    )
    return 0
