"""Result records: one per (model, task, protocol), the same shape for every protocol and lm-eval.

A record holds the score with its bootstrap 95% interval, counts (items, answered, unparseable),
per-category accuracy, the per-question predictions (for paired comparisons) and everything that
identifies it (model and task content hashes, protocol, settings). Records are plain dicts so
they go to JSON unchanged.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alloylm.atomic import atomic_write_json
from alloylm.evals.stats import (
    bootstrap_ci,
    paired_bootstrap,
    ratio_bootstrap_ci,
    relative_improvement,
)

Record = dict[str, Any]
SUMMARY_KEYS = (
    "model",
    "task",
    "protocol",
    "metric",
    "score",
    "ci95",
    "n",
    "answered",
    "unparseable",
)


def accuracy_record(predictions: Sequence[dict[str, Any]], *, resamples: int, seed: int) -> Record:
    """Score, interval, counts and per-category accuracy from per-question predictions."""
    correct = [1.0 if p["correct"] else 0.0 for p in predictions]
    n = len(correct)
    by_category: dict[str, list[float]] = defaultdict(list)
    for prediction, value in zip(predictions, correct, strict=False):
        if prediction.get("category") is not None:
            by_category[str(prediction["category"])].append(value)
    return {
        "metric": "accuracy",
        "score": sum(correct) / n if n else float("nan"),
        "ci95": list(bootstrap_ci(correct, resamples=resamples, seed=seed)),
        "n": n,
        "correct": int(sum(correct)),
        "answered": sum(1 for p in predictions if p["parsed"]),
        "unparseable": sum(1 for p in predictions if not p["parsed"]),
        "per_category": {
            name: {"n": len(values), "accuracy": sum(values) / len(values)}
            for name, values in sorted(by_category.items())
        },
        "predictions": list(predictions),
    }


def perplexity_record(
    per_document: Sequence[tuple[float, int]], *, resamples: int, seed: int
) -> Record:
    """exp(total NLL / total tokens) with a document-level bootstrap interval."""
    nll = [total for total, _ in per_document]
    tokens = [count for _, count in per_document]
    low, high = ratio_bootstrap_ci(nll, tokens, resamples=resamples, seed=seed)
    per_token = sum(nll) / max(sum(tokens), 1)
    return {
        "metric": "perplexity",
        "score": math.exp(per_token),
        "ci95": [math.exp(low), math.exp(high)],
        "nll_per_token": per_token,
        "n": len(per_document),
        "tokens": sum(tokens),
        "answered": len(per_document),
        "unparseable": 0,
        "per_category": {},
        "predictions": [
            {"id": str(i), "nll": round(t, 4), "tokens": c} for i, (t, c) in enumerate(per_document)
        ],
    }


def add_baseline_comparisons(
    records: list[Record], baseline: str | None, *, resamples: int, seed: int
) -> None:
    """Relative improvement (P - P_base) / P_base and a paired bootstrap against the baseline model."""
    if not baseline:
        return
    base = {(r["task"], r["protocol"]): r for r in records if r["model"] == baseline}
    for record in records:
        reference = base.get((record["task"], record["protocol"]))
        if reference is None or record is reference:
            continue
        comparison: dict[str, Any] = {
            "baseline": baseline,
            "relative_improvement": relative_improvement(record["score"], reference["score"]),
        }
        if record["metric"] == "accuracy":
            mine = {p["id"]: p["correct"] for p in record["predictions"]}
            theirs = {p["id"]: p["correct"] for p in reference["predictions"]}
            shared = [key for key in mine if key in theirs]
            if shared:
                comparison["paired"] = paired_bootstrap(
                    [float(mine[k]) for k in shared],
                    [float(theirs[k]) for k in shared],
                    resamples=resamples,
                    seed=seed,
                )
        record["vs_baseline"] = comparison


def summary(record: Record) -> Record:
    """The record without its per-question predictions."""
    return {key: value for key, value in record.items() if key != "predictions"}


def write_results(path: str | Path, records: list[Record], **extra: Any) -> Path:
    path = Path(path)
    atomic_write_json(path, {**extra, "results": records})
    return path


def _format_score(record: Record) -> str:
    score, (low, high) = record["score"], record["ci95"]
    if record["metric"] == "perplexity":
        return f"ppl {score:.2f} [{low:.2f}, {high:.2f}]"
    return f"{score:.3f} [{low:.3f}, {high:.3f}]"


def format_table(records: Sequence[Record]) -> str:
    """A plain-text table, one line per (model, task, protocol), models side by side per task."""
    header = (
        "model",
        "task",
        "protocol",
        "score [95% CI]",
        "n",
        "answered",
        "unparseable",
        "vs baseline",
    )
    rows = [header]
    for record in sorted(records, key=lambda r: (r["task"], r["protocol"])):
        relative = (record.get("vs_baseline") or {}).get("relative_improvement")
        rows.append(
            (
                _short(record["model"]),
                record["task"],
                record["protocol"] + (" (cached)" if record.get("cached") else ""),
                _format_score(record),
                str(record["n"]),
                str(record["answered"]),
                str(record["unparseable"]),
                f"{relative:+.1%}" if relative is not None else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _short(model: str, limit: int = 48) -> str:
    return model if len(model) <= limit else "..." + model[-(limit - 3) :]
