"""Finding the JSON object in a model's reply, and the schema subset (chat/jsonreply.py)."""

from __future__ import annotations

from alloylm.chat.jsonreply import (
    check_schema,
    extract_json_object,
    parse_json_reply,
    unsupported_keywords,
)


def test_the_object_is_found_in_prose_and_fences():
    assert extract_json_object('{"a": 1}') == ({"a": 1}, None)
    assert extract_json_object('Sure!\n```json\n{"a": [1, 2]}\n```\nBye') == ({"a": [1, 2]}, None)
    # the longest object that parses wins over an inner one, braces in strings do not count
    text = 'Design: {"name": "x", "inner": {"k": "}"}} and then {"b": 2}'
    assert extract_json_object(text) == ({"name": "x", "inner": {"k": "}"}}, None)
    # an outer object with a trailing comma does not parse; its inner object does
    assert extract_json_object('{"a": {"b": 1},}') == ({"b": 1}, None)


def test_why_no_object():
    assert extract_json_object("") == (None, "empty reply")
    assert extract_json_object("[1, 2]") == (None, "no JSON object in the reply")
    assert extract_json_object('{"a": ') == (None, "a JSON object was started but does not parse")


def test_schema_subset():
    schema = {
        "type": "object",
        "required": ["name", "parts"],
        "properties": {
            "name": {"type": "string"},
            "parts": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "count": {"type": "integer"},
            "kind": {"enum": ["a", "b"]},
        },
        "additionalProperties": False,
    }
    assert check_schema({"name": "x", "parts": ["p"], "count": 2.0}, schema) == []
    problems = check_schema({"parts": [1], "count": True, "kind": "c", "extra": 0}, schema)
    assert problems == [
        "$: missing required key 'name'",
        "$.parts[0]: expected string, got int",
        "$.count: expected integer, got bool",
        "$.kind: 'c' is not one of ['a', 'b']",
        "$: unexpected keys ['extra']",
    ]
    assert check_schema({"name": "x", "parts": []}, schema) == [
        "$.parts: 0 items, at least 1 expected"
    ]
    assert check_schema(None, {"type": ["object", "null"]}) == []
    assert unsupported_keywords({"type": "object", "properties": {"a": {"pattern": "x"}}}) == [
        "$.properties.a.pattern"
    ]


def test_parse_json_reply_never_raises():
    reply = parse_json_reply("no json here", {"type": "object"})
    assert not reply.valid and reply.value is None and reply.as_dict()["parsed"] is False
    reply = parse_json_reply('{"a": 1}', {"type": "object", "required": ["b"]})
    assert reply.value == {"a": 1} and not reply.valid
