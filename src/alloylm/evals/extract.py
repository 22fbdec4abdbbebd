"""The `extract` task type: the model reads a passage and answers one JSON object of lists
(e.g. materials, properties, methods); scored by the share of valid JSON and field-level
precision and recall against hand-made gold lists.

The task file is JSONL. An optional first record `{"schema": {...}}` holds the JSON schema shown
to the model and checked (alloylm's subset, chat/jsonreply.py); without one, the schema is an
object whose fields are the gold keys, each a list of strings. Every other record is
`{"id": ..., "text": passage, "gold": {field: [item, ...]}}`, where an item is a string or a list of
accepted spellings of one item (["collagen fibers", "collagen"]).

Matching is exact after normalisation (`normalise_item`: case, quotes, leading articles, spaces,
end punctuation, fibre/fiber, a plural 's' on the last word). Per passage and field, each predicted
item (duplicates removed) counts as a true positive when it matches a gold item not matched yet.
Micro precision = TP / predicted, recall = TP / gold, F1 = 2 TP / (predicted + gold) over all
passages and fields: the score, with a passage-level bootstrap interval. A reply that is not a JSON
object (or has a field that is not a list) predicts nothing for those fields and counts as invalid.
The prompt goes through the model's chat template; the answer is greedy, by the one generation
loop, unconstrained (so the valid-JSON share measures the model, not a decoder constraint).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alloylm.data.jsonl import iter_jsonl
from alloylm.errors import DataError
from alloylm.evals.tasks import TaskType

EXTRACT_MAX_NEW_TOKENS = 256
PROMPT = (
    "Read the passage and extract the information the JSON schema asks for. Answer with one JSON "
    "object and nothing else; every field is a list of short strings (an empty list when the "
    "passage names none), each item copied as the passage words it.\n\nSchema:\n{schema}\n\n"
    "Passage:\n{text}"
)


class ExtractTask(TaskType):
    """Passages + a JSON schema -> JSON answers, scored against gold lists (see this module)."""

    name = "extract"
    item_kinds = ()


@dataclass(frozen=True)
class ExtractItem:
    id: str
    text: str
    gold: dict[str, list[list[str]]]  # field -> items, each a list of accepted spellings
    line: int


@dataclass(frozen=True)
class ExtractTaskData:
    schema: dict[str, Any]
    fields: tuple[str, ...]
    items: list[ExtractItem]


def load_extract(path: str | Path, *, limit: int | None = None) -> ExtractTaskData:
    """The schema and passages of an extract task file; DataError naming the line otherwise."""
    path = Path(path)
    schema: dict[str, Any] | None = None
    items: list[ExtractItem] = []
    for number, record in iter_jsonl(path, objects=True):
        where = f"{path}:{number}"
        if "schema" in record and "text" not in record:
            if not isinstance(record["schema"], dict):
                raise DataError("`schema` must be a JSON schema object", file=where)
            schema = record["schema"]
            continue
        text, gold = record.get("text"), record.get("gold")
        if not isinstance(text, str) or not text.strip() or not isinstance(gold, dict):
            raise DataError(
                'expected {"id", "text": passage, "gold": {field: [items]}}',
                file=where,
                hint="see docs/evaluation.md, the extract task",
            )
        parsed: dict[str, list[list[str]]] = {}
        for field, values in gold.items():
            if not isinstance(values, list):
                raise DataError(f"gold.{field} must be a list", file=where)
            parsed[field] = [[v] if isinstance(v, str) else [str(a) for a in v] for v in values]
        items.append(ExtractItem(str(record.get("id", f"line{number}")), text, parsed, number))
    if not items:
        raise DataError("no passages in the extract task file", file=str(path))
    fields = tuple(schema.get("required") or schema.get("properties") or ()) if schema else ()
    if not fields:
        fields = tuple(dict.fromkeys(f for item in items for f in item.gold))
    if schema is None:
        schema = {
            "type": "object",
            "required": list(fields),
            "properties": {f: {"type": "array", "items": {"type": "string"}} for f in fields},
        }
    return ExtractTaskData(schema, fields, items[:limit])


def normalise_item(text: str) -> str:
    """The form two spellings of one item share (see the module docstring)."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    text = text.replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = re.sub(r"\s+", " ", text).strip(" \t\n.,;:!?\"'()[]")
    text = re.sub(r"^(the|a|an) ", "", text)
    text = re.sub(r"fibre", "fiber", text)
    words = text.split(" ")
    last = words[-1]
    if len(last) > 3 and last.endswith("s") and not last.endswith(("ss", "us", "is")):
        words[-1] = last[:-1]
    return " ".join(words)


def match_field(predicted: Sequence[str], gold: Sequence[Sequence[str]]) -> tuple[int, int, int]:
    """(true positives, predicted items, gold items) for one field of one passage."""
    unique = list(dict.fromkeys(normalise_item(p) for p in predicted if str(p).strip()))
    gold_forms = [{normalise_item(alias) for alias in aliases} for aliases in gold]
    used: set[int] = set()
    hits = 0
    for item in unique:
        for index, forms in enumerate(gold_forms):
            if index not in used and item in forms:
                used.add(index)
                hits += 1
                break
    return hits, len(unique), len(gold)


def score_answer(
    reply: str, item: ExtractItem, fields: Sequence[str], schema: dict[str, Any]
) -> dict[str, Any]:
    """Per-passage prediction record: valid JSON, schema problems, TP/predicted/gold per field."""
    from alloylm.chat.jsonreply import parse_json_reply

    parsed = parse_json_reply(reply, schema)
    value = parsed.value or {}
    per_field = {}
    for field in fields:
        predicted = value.get(field)
        if not isinstance(predicted, list):
            predicted = []
        tp, n_pred, n_gold = match_field([str(p) for p in predicted], item.gold.get(field, []))
        per_field[field] = {"tp": tp, "predicted": n_pred, "gold": n_gold}
    return {
        "id": item.id,
        "line": item.line,
        "valid_json": parsed.value is not None,
        "schema_ok": parsed.valid,
        "json_error": parsed.error,
        "schema_errors": parsed.schema_errors,
        "fields": per_field,
        "response": reply,
    }


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def extract_record(
    predictions: Sequence[dict[str, Any]], fields: Sequence[str], *, resamples: int, seed: int
) -> dict[str, Any]:
    """The result record: micro F1 (score) with a passage bootstrap CI, precision, recall, the
    valid-JSON share, and per-field precision/recall/F1."""
    from alloylm.evals.stats import ratio_interval

    def totals(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> tuple[int, int, int]:
        tp = sum(r["fields"][f]["tp"] for r in rows for f in names)
        pred = sum(r["fields"][f]["predicted"] for r in rows for f in names)
        gold = sum(r["fields"][f]["gold"] for r in rows for f in names)
        return tp, pred, gold

    tp, pred, gold = totals(predictions, fields)
    doubled = [2.0 * sum(r["fields"][f]["tp"] for f in fields) for r in predictions]
    sizes = [
        float(sum(r["fields"][f]["predicted"] + r["fields"][f]["gold"] for f in fields))
        for r in predictions
    ]
    interval = ratio_interval(doubled, sizes, resamples=resamples, seed=seed, what="passages")
    low, high = interval["ci95"]  # type: ignore[misc]
    per_field = {}
    for field in fields:
        ftp, fpred, fgold = totals(predictions, [field])
        per_field[field] = {
            "precision": _ratio(ftp, fpred),
            "recall": _ratio(ftp, fgold),
            "f1": _ratio(2 * ftp, fpred + fgold),
            "tp": ftp,
            "predicted": fpred,
            "gold": fgold,
        }
    valid = sum(1 for p in predictions if p["valid_json"])
    return {
        "metric": "field_f1",
        "score": _ratio(2 * tp, pred + gold),
        "ci95": [low, high],
        "approximate": interval["approximate"],
        "ci_note": interval["ci_note"],
        "n": len(predictions),
        "precision": _ratio(tp, pred),
        "recall": _ratio(tp, gold),
        "valid_json": _ratio(valid, len(predictions)),
        "schema_ok": _ratio(sum(1 for p in predictions if p["schema_ok"]), len(predictions)),
        "answered": valid,
        "unparseable": len(predictions) - valid,
        "per_field": per_field,
        "predictions": list(predictions),
    }


def extract_prompt(tokenizer: Any, item: ExtractItem, schema: dict[str, Any]) -> str:
    from alloylm.data.chat_template import format_prompt

    user = PROMPT.format(schema=json.dumps(schema, indent=1), text=item.text)
    return format_prompt(tokenizer, [{"role": "user", "content": user}])


def run_extract(
    scorer: Any,
    task: ExtractTaskData,
    *,
    resamples: int,
    seed: int,
    progress: Callable[[int], None] = lambda n: None,
) -> dict[str, Any]:
    """Greedy JSON answers for every passage (scorer: evals/scoring.Scorer), scored."""
    prompts = [
        scorer.encode(extract_prompt(scorer.tokenizer, item, task.schema), special_tokens=False)
        for item in task.items
    ]
    replies = scorer.generate(prompts, max_new_tokens=EXTRACT_MAX_NEW_TOKENS, progress=progress)
    predictions = [
        score_answer(reply, item, task.fields, task.schema)
        for reply, item in zip(replies, task.items, strict=True)
    ]
    return extract_record(predictions, task.fields, resamples=resamples, seed=seed)
