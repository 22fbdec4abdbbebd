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
    difference_words,
    holm_adjust,
    paired_bootstrap,
    paired_ratio_bootstrap,
    ratio_interval,
    relative_improvement,
)

ALPHA = 0.05

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
    """exp(total NLL / total tokens) with a document-level bootstrap interval: none below 2
    documents, marked approximate below 30 (`evals.stats.ratio_interval`)."""
    nll = [total for total, _ in per_document]
    tokens = [count for _, count in per_document]
    interval = ratio_interval(nll, tokens, resamples=resamples, seed=seed)
    low, high = interval["ci95"]  # type: ignore[misc]
    per_token = sum(nll) / max(sum(tokens), 1)
    return {
        "metric": "perplexity",
        "score": math.exp(per_token),
        "ci95": [None, None] if low is None else [math.exp(low), math.exp(high)],
        "approximate": interval["approximate"],
        "ci_note": interval["ci_note"],
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
    records: list[Record],
    baseline: str | None,
    *,
    resamples: int,
    seed: int,
    correction: str = "holm",
) -> None:
    """Relative improvement and a paired comparison against the baseline model, on the items both
    scored: the paired bootstrap of the accuracy difference, or the paired document bootstrap of
    the perplexity ratio. Every model against the baseline on one (task, protocol) is one family:
    its verdicts are Holm-adjusted (`correction="none"` turns that off)."""
    if not baseline:
        return
    base = {(r["task"], r["protocol"]): r for r in records if r["model"] == baseline}
    families: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        reference = base.get((record["task"], record["protocol"]))
        if reference is None or record is reference:
            continue
        lower_is_better = record["metric"] == "perplexity"
        comparison: dict[str, Any] = {
            "baseline": baseline,
            "relative_improvement": relative_improvement(
                record["score"], reference["score"], higher_is_better=not lower_is_better
            ),
        }
        paired = _paired(record, reference, resamples=resamples, seed=seed)
        if paired is not None:
            comparison["paired"] = paired
            families[(record["task"], record["protocol"])].append(comparison)
        record["vs_baseline"] = comparison
    for (task, protocol), comparisons in families.items():
        adjusted = (
            holm_adjust([c["paired"]["p"] for c in comparisons])
            if correction == "holm"
            else [c["paired"]["p"] for c in comparisons]
        )
        for comparison, p_adjusted in zip(comparisons, adjusted, strict=True):
            paired = comparison["paired"]
            paired["p_adjusted"] = p_adjusted
            paired["family"] = f"vs {baseline} on {task}/{protocol} ({len(comparisons)} models)"
            paired["correction"] = correction if len(comparisons) > 1 else "none (one test)"
            signed = -paired["log_ratio"] if "log_ratio" in paired else paired["difference"]
            comparison["verdict"] = difference_words(signed, p_adjusted < ALPHA)


def _paired(
    record: Record, reference: Record, *, resamples: int, seed: int
) -> dict[str, Any] | None:
    """The paired comparison of one record with the baseline's, over the items both scored."""
    mine = {str(p["id"]): p for p in record.get("predictions") or []}
    theirs = {str(p["id"]): p for p in reference.get("predictions") or []}
    shared = [key for key in mine if key in theirs]
    if not shared:
        return None
    if record["metric"] == "accuracy":
        return paired_bootstrap(
            [float(mine[k]["correct"]) for k in shared],
            [float(theirs[k]["correct"]) for k in shared],
            resamples=resamples,
            seed=seed,
        )
    if record["metric"] == "perplexity":
        return paired_perplexity(record, reference, resamples=resamples, seed=seed)
    return None


def paired_perplexity(
    record: Record, reference: Record, *, resamples: int, seed: int
) -> dict[str, Any] | None:
    """The paired document bootstrap of the perplexity ratio of two records, over the scoring
    units both scored (`evals.stats.paired_ratio_bootstrap`); None when they share none."""
    mine = {str(p["id"]): p for p in record.get("predictions") or []}
    theirs = {str(p["id"]): p for p in reference.get("predictions") or []}
    shared = [key for key in mine if key in theirs]
    if not shared:
        return None
    return paired_ratio_bootstrap(
        [float(mine[k]["nll"]) for k in shared],
        [float(mine[k]["tokens"]) for k in shared],
        [float(theirs[k]["nll"]) for k in shared],
        [float(theirs[k]["tokens"]) for k in shared],
        resamples=resamples,
        seed=seed,
    )


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
        interval = "[no interval]" if low is None else f"[{low:.2f}, {high:.2f}]"
        return f"ppl {score:.2f} {interval}" + (" ~" if record.get("approximate") else "")
    if low is None:
        return f"{score:.3f} [no interval]"
    return f"{score:.3f} [{low:.3f}, {high:.3f}]"


def format_paired(comparison: dict[str, Any] | None) -> str:
    """'+2.1 pp [0.4, 3.9] better (Holm)' or 'ppl x0.95 [0.91, 0.99] better': the paired
    difference against the baseline, its 95% interval and the verdict words."""
    paired = (comparison or {}).get("paired")
    if not paired:
        return ""
    low, high = paired["ci95"]
    if "ratio" in paired:
        interval = "[no interval]" if low is None else f"[{low:.3f}, {high:.3f}]"
        text = f"ppl x{paired['ratio']:.3f} {interval}"
    else:
        text = f"{paired['difference'] * 100:+.1f} pp [{low * 100:.1f}, {high * 100:.1f}]"
    words = comparison.get("verdict") or ""
    correction = paired.get("correction") or ""
    suffix = f" ({correction})" if correction == "holm" else ""
    return f"{text} {words}{suffix}".rstrip()


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
        "paired vs baseline [95% CI]",
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
                format_paired(record.get("vs_baseline")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = table_notes(records)
    return "\n".join(lines + notes)


def table_notes(records: Sequence[Record]) -> list[str]:
    """The lines under the table: how the paired comparisons were corrected, approximate intervals."""
    notes = []
    corrections = {
        (r.get("vs_baseline") or {}).get("paired", {}).get("family"): (r.get("vs_baseline") or {})
        .get("paired", {})
        .get("correction")
        for r in records
        if (r.get("vs_baseline") or {}).get("paired")
    }
    for family, correction in corrections.items():
        test = "paired bootstrap over the items both scored"
        if correction == "holm":
            notes.append(f"paired verdicts {family}: Holm step-down, family-wise 5% ({test})")
        else:
            notes.append(f"paired verdicts {family}: {correction}, 5% ({test})")
    for record in records:
        if record.get("ci_note"):
            notes.append(f"{_short(record['model'])} on {record['task']}: {record['ci_note']}")
    return [""] + notes if notes else []


def _short(model: str, limit: int = 48) -> str:
    return model if len(model) <= limit else "..." + model[-(limit - 3) :]
