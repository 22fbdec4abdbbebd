"""`alloy lineage DIR`: the chain of an artifact back to its source models."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", help="an artifact folder holding alloy.json")
    parser.add_argument("--json", action="store_true", help="print the lineage as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.tree import Tree

    from alloylm.errors import AlloyError
    from alloylm.lineage import lineage_tree

    tree = lineage_tree(args.artifact)
    if tree is None:
        raise AlloyError(
            f"{args.artifact} holds no alloy.json",
            hint="give a folder written by alloy run (e.g. runs/quickstart/sft)",
        )
    if args.json:
        print(json.dumps(tree, indent=2))
        return 0

    def render(node: dict, branch: Tree) -> None:
        for parent in node.get("parents", []):
            child = branch.add(_label(parent))
            render(parent, child)

    root = Tree(_label(tree))
    render(tree, root)
    Console(emoji=False).print(root)
    return 0


def _label(node: dict) -> str:
    from rich.markup import escape

    if node.get("stage"):
        metrics = node.get("metrics") or {}
        extra = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in metrics.items()
            if k in ("final_loss", "accuracy", "train_tokens")
        )
        when = node.get("created", "")
        return (
            f"[bold]{node['stage']}[/] ({node['kind']}) {when} hash {node.get('content_hash', '')[:12]}"
            + (escape(f"  [{extra}]") if extra else "")
            + f"\n[dim]{node.get('path', '')}[/]"
        )
    source = escape(str(node.get("source")))
    if node.get("stage_ref"):
        return (
            f"{node['stage_ref']} [dim](shown above; {escape(str(node.get('role')))}: {source})[/]"
        )
    role = str(node.get("role") or "")
    if role == "model" or role.startswith(("models", "base_model", "ref_model", "teacher")):
        return f"[green]{source}[/] (source model)"
    return f"{source} [dim]({escape(role)})[/]"
