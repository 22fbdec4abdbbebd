"""Editable, versioned prompt templates (Jinja2 files in distill/prompts/, or a folder of your own).

A template file starts with `{# version: N ... #}` and holds `[system]` and `[user]` sections.
Its cache version is `name:vN:<hash of the file>`, so editing a template never reuses answers
produced by the old wording, and the declared N documents intent in the artifact's stats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from alloylm.errors import ConfigError
from alloylm.hashing import hash_text

BUILTIN_DIR = Path(__file__).with_name("prompts")
_VERSION = re.compile(r"\{#\s*version:\s*(\w+)")
_SECTION = re.compile(r"^\[(system|user)\]\s*$", re.MULTILINE)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str  # "qa:v1:1a2b3c4d"
    source: str
    path: Path

    def render(self, **variables: object) -> list[dict[str, str]]:
        """Chat messages for the teacher."""
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
        try:
            text = env.from_string(self.source).render(**variables)
        except jinja2.UndefinedError as error:
            raise ConfigError(
                f"prompt template uses an unknown variable: {error}", file=str(self.path)
            ) from None
        parts = _SECTION.split(text)
        messages = [
            {"role": role, "content": content.strip()}
            for role, content in zip(parts[1::2], parts[2::2], strict=True)
        ]
        if not messages:
            messages = [{"role": "user", "content": text.strip()}]
        return messages


def load_template(name: str, prompts_dir: str | Path | None = None) -> PromptTemplate:
    """`name`.j2 (or .txt) from `prompts_dir` when it has one, else the built-in template."""
    folders = ([Path(prompts_dir)] if prompts_dir else []) + [BUILTIN_DIR]
    for folder in folders:
        for suffix in (".j2", ".txt"):
            path = folder / f"{name}{suffix}"
            if path.is_file():
                source = path.read_text(encoding="utf-8")
                match = _VERSION.search(source)
                declared = match.group(1) if match else "0"
                return PromptTemplate(
                    name, f"{name}:v{declared}:{hash_text(source)[:8]}", source, path
                )
    raise ConfigError(
        f"no prompt template {name!r}",
        key="prompts_dir",
        hint=f"add {name}.j2 to your prompts folder or remove the generator; built-ins are in {BUILTIN_DIR}",
    )
