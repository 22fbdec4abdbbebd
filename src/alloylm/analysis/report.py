"""`write_report`: a study's run folder -> report.html (one offline file), study.json and CSV.

The HTML holds everything inline: the CSS in a <style> element and each figure as an <svg>
element (`alloylm.analysis.plots`), so it opens from a file:// URL with no network request, no
script and no font download. study.json holds every number of the page (and more: the question
ids each merge gains or loses); models.csv and merges.csv are the two tables, one row per
(model or merge, benchmark), for spreadsheets and pandas.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Any

REPORT_FOLDER = "report"
TEMPLATE = "report.html.j2"


def write_report(
    run_dir: Path | str, *, out_dir: Path | str | None = None, correction: str | None = None
) -> Path:
    """Analyse the study in `run_dir` and write report.html, study.json, models.csv, merges.csv.

    `correction` is the multiplicity correction of every family of verdicts: 'holm' (the
    default) or 'none' (`alloylm.analysis.verdicts`). Returns the path of report.html (default
    folder: `<run_dir>/report/`).
    """
    from alloylm.analysis.plots import all_figures
    from alloylm.analysis.study import analyse_study, load_study
    from alloylm.atomic import atomic_write_json, atomic_write_text

    started = time.perf_counter()
    inputs = load_study(run_dir)
    study = analyse_study(inputs, correction=correction)
    figures = all_figures(study)
    folder = Path(out_dir) if out_dir is not None else inputs.run_dir / REPORT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    study["figures"] = [
        {"id": f.id, "title": f.title, "drawn": f.svg is not None, "note": f.note} for f in figures
    ]
    study["report_seconds"] = round(time.perf_counter() - started, 3)
    atomic_write_json(folder / "study.json", _json_safe(study))
    atomic_write_text(folder / "models.csv", models_csv(study))
    atomic_write_text(folder / "merges.csv", merges_csv(study))
    path = folder / "report.html"
    atomic_write_text(path, render_html(study, figures))
    return path


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: study.json must be valid JSON for every tool."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# --- text helpers shared by the HTML, the CSV and the terminal table ------------------------------


def format_score(score: dict[str, Any] | None, metric: str = "accuracy") -> str:
    """'34.0% [22.0, 48.0]' (accuracy) or '38240.38 [37000.1, 39000.2]' (perplexity); '' if absent."""
    if not score or score.get("score") is None:
        return ""
    low, high = score["ci95"]
    mark = " (approximate)" if score.get("approximate") else ""
    if metric == "perplexity":
        if low is None:
            return f"{score['score']:.2f} [no interval]"
        return f"{score['score']:.2f} [{low:.2f}, {high:.2f}]{mark}"
    if low is None:
        return f"{score['score'] * 100:.1f}% [no interval]"
    return f"{score['score'] * 100:.1f}% [{low * 100:.1f}, {high * 100:.1f}]{mark}"


def format_relative(value: float | None) -> str:
    return "" if value is None else f"{value:+.1%}"


def _metric_of(study: dict[str, Any], key: str) -> str:
    return next((b["metric"] for b in study["benchmarks"] if b["key"] == key), "accuracy")


def summary_rows(
    study: dict[str, Any], *, curve_points: bool = True
) -> tuple[list[str], list[list[str]]]:
    """The terminal/HTML headline table: one row per model, headline accuracy and perplexity
    (without the points of interpolation curves when `curve_points` is False)."""
    headline = study.get("headline")
    perplexity = [b["key"] for b in study["benchmarks"] if b["metric"] == "perplexity"]
    header = ["model", "lineage", "strategy", "merged"]
    if headline:
        selection = " (selection)" if study.get("confirmed") else ""
        header += [f"{headline} [95% CI]{selection}", "vs baseline (paired)"]
    header += [f"{key} [95% CI]" for key in perplexity]
    rows = []
    for model in study["models"]:
        if not curve_points and model.get("role") == "curve":
            continue
        row = [
            model["id"],
            str(model.get("lineage") or ""),
            str(model.get("strategy") or ""),
            "yes" if model.get("merged") else "",
        ]
        if headline:
            row.append(format_score(model["scores"].get(headline)) or "not evaluated")
            comparison = model["vs_baseline"].get(headline)
            if model["id"] == study.get("baseline"):
                row.append("baseline")
            elif comparison:
                row.append(comparison.get("verdict") or "")
            else:
                row.append("")
        for key in perplexity:
            row.append(format_score(model["scores"].get(key), "perplexity"))
        rows.append(row)
    return header, rows


def merge_rows(study: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per merge on the headline benchmark: the study's per-merge numbers and verdicts."""
    headline = study.get("headline")
    header = [
        "merge",
        "parents",
        "P1",
        "P2",
        "E",
        "A",
        "A - E",
        "A vs both parents",
        "diversity |P1-P2|",
        "disagreement",
        "SLERP spherical",
        "emergent / lost",
    ]
    rows = []
    for merge in study["merges"]:
        result = merge["benchmarks"].get(headline or "")
        fallback = merge.get("linear_fallback")
        fallback_text = (
            f"{fallback['tensors'] - fallback['fallback']} of {fallback['tensors']}"
            if fallback and fallback.get("tensors")
            else ""
        )
        if result is None:
            rows.append(
                [
                    merge["id"],
                    ", ".join(merge["parents"]),
                    *[""] * 8,
                    fallback_text,
                    "; ".join(merge["notes"]) or "not evaluated",
                ]
            )
            continue
        rows.append(
            [
                merge["id"],
                ", ".join(merge["parents"]),
                f"{result['P1'] * 100:.1f}%",
                f"{result['P2'] * 100:.1f}%",
                f"{result['E'] * 100:.1f}%",
                f"{result['P_merged'] * 100:.1f}%",
                result["verdict_vs_expected"],
                result["verdict_vs_best_parent"],
                f"{result['diversity'] * 100:.1f} pp",
                f"{result['disagreement_rate']:.0%} of {result['n']}",
                fallback_text,
                f"{len(result['emergent'])} / {len(result['lost'])}",
            ]
        )
    return header, rows


def slerp_paths(study: dict[str, Any]) -> str | None:
    """How many tensors SLERP interpolated on the sphere, over the merges that report it (None
    when none does: no SLERP merge, or manifests without the counts)."""
    counts = [
        m["linear_fallback"]
        for m in study["merges"]
        if (m.get("linear_fallback") or {}).get("tensors")
    ]
    if not counts:
        return None
    tensors = sum(c["tensors"] for c in counts)
    spherical = [c["tensors"] - c["fallback"] for c in counts]
    merges = f"{len(counts)} merge{'s' if len(counts) != 1 else ''}"
    per_merge = f" (per merge {min(spherical):,} to {max(spherical):,})" if len(counts) > 1 else ""
    text = (
        f"SLERP took the spherical path on {sum(spherical):,} of {tensors:,} tensors over "
        f"{merges}{per_merge}; the other {tensors - sum(spherical):,} took its linear fallback "
        "(|cos| > 0.9995 between the parents' tensors, where SLERP is linear interpolation)."
    )
    if sum(spherical) == 0:
        text += " These merges test linear interpolation only."
    return text


def models_csv(study: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "model",
            "role",
            "lineage",
            "strategy",
            "merged",
            "benchmark",
            "metric",
            "score",
            "ci_low",
            "ci_high",
            "n",
            "relative_improvement",
            "paired_difference",
            "paired_ci_low",
            "paired_ci_high",
            "p_adjusted",
            "family",
            "correction",
            "verdict",
        ]
    )
    for model in study["models"]:
        for key, score in model["scores"].items():
            comparison = model["vs_baseline"].get(key) or {}
            paired = comparison.get("paired") or comparison.get("paired_ratio") or {}
            interval = paired.get("ci95") or [None, None]
            writer.writerow(
                [
                    model["id"],
                    model.get("role"),
                    model.get("lineage"),
                    model.get("strategy"),
                    bool(model.get("merged")),
                    key,
                    _metric_of(study, key),
                    score["score"],
                    score["ci95"][0],
                    score["ci95"][1],
                    score["n"],
                    comparison.get("relative_improvement"),
                    paired.get("difference", paired.get("ratio")),
                    interval[0],
                    interval[1],
                    comparison.get("p_adjusted"),
                    comparison.get("family"),
                    comparison.get("correction"),
                    comparison.get("verdict", ""),
                ]
            )
    return buffer.getvalue()


def merges_csv(study: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "merge",
            "parent_1",
            "parent_2",
            "lineage",
            "strategy",
            "schedule",
            "benchmark",
            "n",
            "P1",
            "P2",
            "E",
            "P_merged",
            "gain_over_expected",
            "gain_over_expected_ci_low",
            "gain_over_expected_ci_high",
            "gain_over_best_parent",
            "gain_over_best_parent_ci_low",
            "gain_over_best_parent_ci_high",
            "best_parent",
            "vs_parent_1",
            "vs_parent_1_ci_low",
            "vs_parent_1_ci_high",
            "vs_parent_2",
            "vs_parent_2_ci_low",
            "vs_parent_2_ci_high",
            "diversity",
            "disagreement_rate",
            "linear_fallback_share",
            "emergent",
            "lost",
            "family",
            "correction",
            "verdict_vs_expected",
            "verdict_vs_best_parent",
        ]
    )
    for merge in study["merges"]:
        fallback = (merge.get("linear_fallback") or {}).get("share")
        parents = [*merge["parents"], "", ""][:2]
        for key, r in merge["benchmarks"].items():
            writer.writerow(
                [
                    merge["id"],
                    parents[0],
                    parents[1],
                    merge.get("lineage"),
                    merge.get("strategy"),
                    merge.get("schedule"),
                    key,
                    r["n"],
                    r["P1"],
                    r["P2"],
                    r["E"],
                    r["P_merged"],
                    r["vs_expected"]["difference"],
                    *r["vs_expected"]["ci95"],
                    r["vs_best_parent"]["difference"],
                    *r["vs_best_parent"]["ci95"],
                    r["best_parent"],
                    r["vs_parents"]["vs_a"]["difference"],
                    *r["vs_parents"]["vs_a"]["ci95"],
                    r["vs_parents"]["vs_b"]["difference"],
                    *r["vs_parents"]["vs_b"]["ci95"],
                    r["diversity"],
                    r["disagreement_rate"],
                    fallback,
                    len(r["emergent"]),
                    len(r["lost"]),
                    r.get("family"),
                    r.get("correction"),
                    r["verdict_vs_expected"],
                    r["verdict_vs_best_parent"],
                ]
            )
    return buffer.getvalue()


def render_html(study: dict[str, Any], figures: list[Any]) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("alloylm.analysis", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["score"] = format_score
    env.filters["relative"] = format_relative
    summary_header, summary = summary_rows(study)
    merge_header, merges = merge_rows(study)
    template = env.get_template(TEMPLATE)
    return template.render(
        study=study,
        figures=figures,
        summary_header=summary_header,
        summary=summary,
        merge_header=merge_header,
        merges=merges,
        slerp_paths=slerp_paths(study),
        settings_json=json.dumps(study["eval"]["settings"], sort_keys=True),
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
