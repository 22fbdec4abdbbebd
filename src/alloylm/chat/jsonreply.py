"""JSON in a model's reply: find the object, check it against a small JSON-schema subset.

Models wrap JSON in prose and code fences, or break it. `extract_json_object` finds the object
the reply most plausibly means (a whole-reply parse, else a fenced block, else the longest
balanced `{...}` that parses), so an answer is judged on its JSON, not on its wrapping.

`jsonschema` is not a dependency of alloylm, so `check_schema` implements the subset a
conversation script or an extraction task needs: `type` (object, array, string, number,
integer, boolean, null, or a list of them), `required`, `properties`, `items`, `enum`,
`minItems`, `additionalProperties: false`. Other keywords are ignored (and reported by
`unsupported_keywords`, so a user sees that they were not checked).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
SUPPORTED_KEYWORDS = frozenset(
    {
        "type",
        "required",
        "properties",
        "items",
        "enum",
        "minItems",
        "additionalProperties",
        "description",
        "title",
        "$schema",
    }
)


@dataclass(frozen=True)
class JsonReply:
    """What a reply's JSON turned out to be. `value` is None when no object parsed."""

    value: dict[str, Any] | None
    error: str | None  # why no object parsed
    schema_errors: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.value is not None and not self.schema_errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "parsed": self.value is not None,
            "error": self.error,
            "schema_errors": list(self.schema_errors),
            "value": self.value,
        }


def extract_json_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON object in `text`, None) or (None, why not)."""
    stripped = text.strip()
    if not stripped:
        return None, "empty reply"
    candidates = [stripped] + [m.group(1).strip() for m in _FENCE.finditer(text)]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value, None
    decoder = json.JSONDecoder()
    best: tuple[int, int, dict[str, Any]] | None = None  # (start, end, object): the longest
    for start in (i for i, char in enumerate(text) if char == "{"):
        if best is not None and start < best[1]:
            continue  # inside the object already found
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict) and (best is None or end - start > best[1] - best[0]):
            best = (start, end, value)
    if best is not None:
        return best[2], None
    if "{" not in text:
        return None, "no JSON object in the reply"
    return None, "a JSON object was started but does not parse"


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


def _has_type(value: Any, name: str) -> bool:
    if name in ("number", "integer") and isinstance(value, bool):
        return False  # JSON true is not a number
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(name, (object,)))


def check_schema(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Problems of `value` against `schema` (the subset in the module docstring); [] when none."""
    problems: list[str] = []
    expected = schema.get("type")
    if expected is not None:
        names = expected if isinstance(expected, list) else [expected]
        if not any(_has_type(value, name) for name in names):
            got = type(value).__name__ if value is not None else "null"
            return [f"{where}: expected {' or '.join(names)}, got {got}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                problems.append(f"{where}: missing required key {key!r}")
        properties = schema.get("properties", {})
        for key, sub in properties.items():
            if key in value:
                problems += check_schema(value[key], sub, f"{where}.{key}")
        if schema.get("additionalProperties") is False:
            extra = sorted(set(value) - set(properties))
            if extra:
                problems.append(f"{where}: unexpected keys {extra}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append(f"{where}: {len(value)} items, at least {schema['minItems']} expected")
        if isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                problems += check_schema(item, schema["items"], f"{where}[{index}]")
    return problems


def unsupported_keywords(schema: Any, where: str = "$") -> list[str]:
    """Schema keywords `check_schema` does not check, with where they are."""
    found: list[str] = []
    if not isinstance(schema, dict):
        return found
    for key, sub in schema.items():
        if key not in SUPPORTED_KEYWORDS:
            found.append(f"{where}.{key}")
        if key == "properties" and isinstance(sub, dict):
            for name, child in sub.items():
                found += unsupported_keywords(child, f"{where}.properties.{name}")
        elif key == "items":
            found += unsupported_keywords(sub, f"{where}.items")
    return found


def parse_json_reply(text: str, schema: dict[str, Any] | None = None) -> JsonReply:
    """The reply's JSON object and its schema problems; never raises."""
    value, error = extract_json_object(text)
    if value is None:
        return JsonReply(None, error)
    return JsonReply(value, None, check_schema(value, schema) if schema else [])
