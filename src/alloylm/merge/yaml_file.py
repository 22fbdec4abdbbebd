"""Read a merge YAML file, in mergekit's format or alloylm's native one (`alloy merge FILE`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from alloylm.errors import ConfigError
from alloylm.merge.config import MergeSettings, settings_from_dict
from alloylm.merge.mergekit_compat import settings_from_mergekit


def load_merge_yaml(path: str | Path) -> MergeSettings:
    """Read a merge YAML: mergekit's format (has `merge_method`) or the native one."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"merge config {path} does not exist", hint="give the path of a YAML file"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise ConfigError(
            f"invalid YAML: {exc}", file=str(path), line=None if line is None else line + 1
        ) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of merge keys", file=str(path))
    template = data.get("chat_template")
    if isinstance(template, str) and "{" not in template:
        # a template file is relative to the YAML, as in a pipeline (inline Jinja has a "{")
        data["chat_template"] = str((path.parent / Path(template).expanduser()).resolve())
    if "merge_method" in data:
        return settings_from_mergekit(data, file=str(path))
    if data.get("kind", "merge") != "merge":
        raise ConfigError(f"kind is {data['kind']!r}, expected merge", file=str(path), key="kind")
    data.pop("kind", None)
    data.pop("description", None)
    return settings_from_dict(data, file=str(path))
