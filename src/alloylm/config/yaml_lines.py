"""Load YAML while remembering the line of every key, so that errors can point at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from alloylm.errors import ConfigError

KeyPath = tuple[str | int, ...]


def _construct(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], source: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = (
                yaml.safe_load(yaml.serialize(key_node))
                if not isinstance(key_node, yaml.ScalarNode)
                else key_node.value
            )
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                raise ConfigError(
                    f"duplicate key {key!r}", file=source, line=key_node.start_mark.line + 1
                )
            child = (*path, key)
            lines[child] = key_node.start_mark.line + 1
            result[key] = _construct(value_node, child, lines, source)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), lines, source) for i, item in enumerate(node.value)]
    # Scalars: let the safe loader decide the type (int, float, bool, null, str).
    return (
        yaml.SafeLoader(yaml.serialize(node)).get_single_data()
        if node.tag != "tag:yaml.org,2002:str"
        else node.value
    )


def load_yaml_with_lines(path: str | Path) -> tuple[Any, dict[KeyPath, int]]:
    """Parse `path`; return (data, {key path: line number})."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"file not found: {path}", hint="check the path of the pipeline YAML")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line_text = (
            text.splitlines()[mark.line] if mark and mark.line < len(text.splitlines()) else ""
        )
        hint = None
        if "${" in line_text and ("[" in line_text or "{" in line_text.split("${")[0]):
            hint = 'quote ${...} references inside [ ] or { }: models: ["${stages.sft.output}"]'
        raise ConfigError(
            f"not valid YAML: {getattr(error, 'problem', error)}",
            file=str(path),
            line=mark.line + 1 if mark else None,
            hint=hint,
        ) from None
    lines: dict[KeyPath, int] = {}
    if node is None:
        return {}, lines
    return _construct(node, (), lines, str(path)), lines


def line_of(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """Line of `path`, or of its nearest ancestor that has one."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
