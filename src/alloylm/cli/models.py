"""`alloy models ls|prepare`: model sources and the local cache."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    sub.add_parser(
        "ls",
        help="list embedded, tiny and cached models with size, architecture, vocab, chat template",
    )
    prepare = sub.add_parser(
        "prepare", help="convert/cache a model source now (e.g. embedded:smollm2-135m-instruct)"
    )
    prepare.add_argument(
        "source", help="model source: embedded:NAME, tiny:llama, a .gguf file, a folder or a hub id"
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from alloylm.models.embedded import EMBEDDED_MODELS, embedded_folder
    from alloylm.models.home import models_cache
    from alloylm.models.loading import describe_model_folder
    from alloylm.models.sources import resolve_model

    console = Console(emoji=False)
    if args.models_command == "prepare":
        path = resolve_model(args.source)
        console.print(f"{args.source} -> {path}")
        return 0
    table = Table(title=f"model sources (cache: {models_cache()})", title_justify="left")
    for column in ("source", "state", "architecture", "layers", "vocab", "size", "chat template"):
        table.add_column(column)

    def add(source: str, folder, note: str = "") -> None:
        if folder is not None and (folder / "config.json").exists():
            info = describe_model_folder(folder)
            table.add_row(
                source,
                "ready",
                info["architecture"],
                str(info["layers"]),
                f"{info['vocab']:,}",
                f"{info['size_bytes'] / 2**20:,.0f} MiB",
                "yes" if info["chat_template"] else "no",
            )
        else:
            table.add_row(source, note or "not prepared", "", "", "", "", "")

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
    console.print(table)
    console.print(
        "Also accepted: any local Hugging Face folder, a .gguf file, or a hub id (needs network)."
    )
    return 0
