"""The report's figures, drawn with matplotlib (Agg, no display) and returned as inline SVG text.

Every function takes the study dict of `alloylm.analysis.study.analyse_study` and returns a
`Figure` (id, title, SVG, caption) or, when the data cannot carry the figure, the same with no SVG
and a note saying why. Text stays text in the SVG (`svg.fonttype: none`): the browser draws it with
its own sans-serif font, so the page loads no font file. Each figure gets its own `svg.hashsalt`,
so the ids of clip paths and markers of two inline SVGs never collide.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PALETTE = ["#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB", "#000000"]


@dataclass
class Figure:
    id: str
    title: str
    caption: str
    svg: str | None = None
    note: str | None = None


def _new_figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height), layout="constrained")


def to_svg(fig: Any, salt: str) -> str:
    """The figure as an <svg> element (no XML prolog or DOCTYPE), ids salted by `salt`."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": "alloylm"})
    text = buffer.getvalue()
    # the RDF metadata block names vocabularies by URL (no request, but noise for a reader)
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.DOTALL)
    return text[text.index("<svg") :]


def _integer_axis(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _label_points(ax: Any, names: list[str], points: list[tuple[float, float]]) -> None:
    """One label per distinct point: merges with identical scores share it (no overprinting)."""
    groups: dict[tuple[float, float], list[str]] = {}
    for name, (x, y) in zip(names, points, strict=True):
        groups.setdefault((round(x, 9), round(y, 9)), []).append(name)
    for (x, y), members in groups.items():
        text = (
            ", ".join(members)
            if len(members) <= 3
            else f"{', '.join(members[:3])} +{len(members) - 3}"
        )
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)


def _style(ax: Any) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(axis="both", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)


def _model_order(study: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluated models grouped by lineage, then strategy, the unmerged one before its merges.

    The points of an interpolation curve (role "curve") have a figure of their own."""
    models = [m for m in study["models"] if m["evaluated"] and m.get("role") != "curve"]
    lineages = list(dict.fromkeys(str(m.get("lineage") or "other") for m in models))
    strategies = list(dict.fromkeys(str(m.get("strategy") or "none") for m in models))
    return sorted(
        models,
        key=lambda m: (
            lineages.index(str(m.get("lineage") or "other")),
            strategies.index(str(m.get("strategy") or "none")),
            bool(m.get("merged")),
        ),
    )


def _strategy_colors(models: list[dict[str, Any]]) -> dict[str, str]:
    strategies = list(dict.fromkeys(str(m.get("strategy") or "none") for m in models))
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(strategies)}


def _bar_panel(
    ax: Any, models: list[dict[str, Any]], key: str, baseline: str | None, scale: float, unit: str
) -> None:
    colors = _strategy_colors(models)
    shown = [m for m in models if key in m["scores"]]
    ys = list(range(len(shown)))[::-1]
    for y, model in zip(ys, shown, strict=True):
        score = model["scores"][key]
        low, high = score["ci95"]
        value = score["score"] * scale
        ax.barh(
            y,
            value,
            color=colors[str(model.get("strategy") or "none")],
            hatch="///" if model.get("merged") else None,
            edgecolor="white" if not model.get("merged") else "#333333",
            linewidth=0.5,
        )
        if low is not None and high is not None:
            ax.errorbar(
                value,
                y,
                xerr=[[value - low * scale], [high * scale - value]],
                fmt="none",
                ecolor="#222222",
                capsize=3,
                linewidth=1,
            )
        if model["id"] == baseline:
            ax.axvline(value, color="#222222", linestyle="--", linewidth=0.8)
    ax.set_yticks(
        ys, [m["id"] + (" (baseline)" if m["id"] == baseline else "") for m in shown], fontsize=8
    )
    ax.set_xlabel(unit)
    ax.set_title(key, fontsize=9)
    _style(ax)


def accuracy_figure(study: dict[str, Any]) -> Figure:
    figure = Figure(
        "fig-accuracy",
        "Accuracy per model (Fig. 4/5)",
        "Accuracy with its 95% bootstrap interval, grouped by lineage and strategy; hatched bars are merges; "
        "the dashed line is the baseline.",
    )
    keys = [b["key"] for b in study["benchmarks"] if b["metric"] == "accuracy"]
    keys.sort(key=lambda k: k != study.get("headline"))
    models = _model_order(study)
    if not keys or not models:
        figure.note = "no accuracy benchmark was evaluated"
        return figure
    fig = _new_figure(3.6 * len(keys) + 1.5, 0.32 * len(models) + 1.4)
    axes = fig.subplots(1, len(keys), sharey=False, squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=True):
        _bar_panel(ax, models, key, study.get("baseline"), 100.0, "accuracy (%)")
    _strategy_legend(fig, models)
    figure.svg = to_svg(fig, figure.id)
    return figure


def _strategy_legend(fig: Any, models: list[dict[str, Any]]) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=color, label=name) for name, color in _strategy_colors(models).items()]
    handles.append(Patch(facecolor="white", edgecolor="#333333", hatch="///", label="merged"))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 6),
        fontsize=8,
        frameon=False,
    )


def perplexity_figure(study: dict[str, Any]) -> Figure:
    figure = Figure(
        "fig-perplexity",
        "Held-out perplexity per model",
        "Perplexity (lower is better) with its 95% document-bootstrap interval.",
    )
    keys = [b["key"] for b in study["benchmarks"] if b["metric"] == "perplexity"]
    models = _model_order(study)
    if not keys or not models:
        figure.note = "no perplexity task was evaluated"
        return figure
    fig = _new_figure(3.6 * len(keys) + 1.5, 0.32 * len(models) + 1.4)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=True):
        _bar_panel(ax, models, key, study.get("baseline"), 1.0, "perplexity")
    _strategy_legend(fig, models)
    figure.svg = to_svg(fig, figure.id)
    return figure


def _headline_merges(study: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    key = study.get("headline")
    return [(m, m["benchmarks"][key]) for m in study["merges"] if key in m["benchmarks"]]


def expected_figure(study: dict[str, Any]) -> Figure:
    figure = Figure(
        "fig-expected",
        "Merged accuracy A against the parents' mean E (Fig. 7)",
        "Above the diagonal a merge beats its parents' mean; bars are the paired 95% interval of A - E.",
    )
    merges = _headline_merges(study)
    if not merges:
        figure.note = "no merge was evaluated with both parents"
        return figure
    fig = _new_figure(5.2, 4.4)
    ax = fig.subplots()
    values = [v for _, r in merges for v in (r["E"], r["P_merged"])]
    lows = [r["E"] + r["vs_expected"]["ci95"][0] for _, r in merges]
    highs = [r["E"] + r["vs_expected"]["ci95"][1] for _, r in merges]
    span_low, span_high = min(values + lows) * 100, max(values + highs) * 100
    pad = max((span_high - span_low) * 0.15, 1.0)
    line = [max(span_low - pad, 0.0), min(span_high + pad, 100.0)]  # accuracies live in [0, 100]
    ax.plot(line, line, color="#888888", linestyle="--", linewidth=1, label="A = E")
    for i, (_, result) in enumerate(merges):
        e, a = result["E"] * 100, result["P_merged"] * 100
        low, high = (result["E"] + c for c in result["vs_expected"]["ci95"])
        ax.errorbar(
            e,
            a,
            yerr=[[a - low * 100], [high * 100 - a]],
            fmt="o",
            color=PALETTE[i % len(PALETTE)],
            capsize=3,
            markersize=5,
        )
    _label_points(
        ax, [m["id"] for m, _ in merges], [(r["E"] * 100, r["P_merged"] * 100) for _, r in merges]
    )
    ax.set_xlim(line)
    ax.set_ylim(line)
    ax.set_xlabel(f"E = (P1 + P2) / 2, {study['headline']} (%)")
    ax.set_ylabel("A = merged accuracy (%)")
    ax.legend(fontsize=8, frameon=False)
    _style(ax)
    figure.svg = to_svg(fig, figure.id)
    return figure


def deviation_figure(study: dict[str, Any]) -> Figure:
    figure = Figure(
        "fig-deviation",
        "Deviation from the best parent (Fig. 13)",
        "A - max(P1, P2) with its paired 95% interval (the best parent re-chosen in every resample); "
        "a bar whose interval lies above 0 is synergy.",
    )
    merges = _headline_merges(study)
    if not merges:
        figure.note = "no merge was evaluated with both parents"
        return figure
    fig = _new_figure(5.5, 0.35 * len(merges) + 1.5)
    ax = fig.subplots()
    ys = list(range(len(merges)))[::-1]
    for y, (_, result) in zip(ys, merges, strict=True):
        gap = result["vs_best_parent"]
        value = gap["difference"] * 100
        low, high = (c * 100 for c in gap["ci95"])
        color = PALETTE[2] if low > 0 else PALETTE[1] if high < 0 else PALETTE[6]
        ax.barh(y, value, color=color)
        ax.errorbar(
            value, y, xerr=[[value - low], [high - value]], fmt="none", ecolor="#222222", capsize=3
        )
    ax.axvline(0, color="#222222", linewidth=0.8)
    ax.set_yticks(ys, [m["id"] for m, _ in merges], fontsize=8)
    ax.set_xlabel(f"A - max(P1, P2), {study['headline']} (pp)")
    _style(ax)
    figure.svg = to_svg(fig, figure.id)
    return figure


def correlation_figure(study: dict[str, Any]) -> Figure:
    figure = Figure(
        "fig-correlation",
        "Correlation of merge attributes (Fig. 10)",
        "Pearson r between the attributes of the merges; attributes that are the same for every merge are left out.",
    )
    correlation = (study.get("across") or {}).get("correlation") or {}
    names = correlation.get("names") or []
    if len(names) < 2:
        figure.note = (
            correlation.get("note") or (study.get("across") or {}).get("notes", ["no merges"])[0]
        )
        return figure
    matrix = correlation["r"]
    size = 1.0 + 0.7 * len(names)
    fig = _new_figure(size + 1.2, size)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(
                j,
                i,
                f"{value:+.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if abs(value) > 0.6 else "black",
            )
    fig.colorbar(image, ax=ax, shrink=0.8, label="Pearson r")
    ax.set_title(f"{correlation['n']} merges", fontsize=9)
    figure.svg = to_svg(fig, figure.id)
    return figure


def clusters_figure(study: dict[str, Any]) -> Figure:
    figure = Figure(
        "fig-clusters",
        "Clusters of merges on z-scored (E, A) (Fig. 8)",
        "Left: K-means with k = 2 on z-scored E and A. Right: Ward hierarchical clustering of the same points.",
    )
    across = study.get("across") or {}
    kmeans = across.get("kmeans") or {}
    dendrogram = across.get("dendrogram") or {}
    if not kmeans.get("labels") or not dendrogram.get("linkage"):
        figure.note = kmeans.get("note") or dendrogram.get("note") or "no merges to cluster"
        return figure
    from scipy.cluster.hierarchy import dendrogram as draw_dendrogram

    ids = across["merge_ids"]
    fig = _new_figure(10, 4.2)
    left, right = fig.subplots(1, 2)
    for cluster in (0, 1):
        points = [
            p
            for p, label in zip(kmeans["points"], kmeans["labels"], strict=True)
            if label == cluster
        ]
        left.scatter(
            [p[0] for p in points],
            [p[1] for p in points],
            color=PALETTE[cluster],
            label=f"cluster {cluster}",
            s=30,
        )
    _label_points(left, ids, [tuple(p) for p in kmeans["points"]])
    left.set_xlabel("z(E)")
    left.set_ylabel("z(A)")
    left.legend(fontsize=8, frameon=False)
    _style(left)
    draw_dendrogram(
        dendrogram["linkage"],
        labels=ids,
        ax=right,
        leaf_rotation=45,
        leaf_font_size=7,
        color_threshold=0,
    )
    right.set_ylabel("Ward distance")
    right.spines["top"].set_visible(False)
    right.spines["right"].set_visible(False)
    figure.svg = to_svg(fig, figure.id)
    return figure


def curve_figures(study: dict[str, Any]) -> list[Figure]:
    out = []
    curves = study.get("curves") or []
    if not curves:
        return [
            Figure(
                "fig-curve",
                "Weight-interpolation curve",
                "Accuracy against the merge's t.",
                note="the study has no interpolation curve (no `curves` in its plan)",
            )
        ]
    for i, curve in enumerate(curves):
        figure = Figure(
            "fig-curve" if i == 0 else f"fig-curve-{i}",
            f"Weight-interpolation curve of {curve.get('merge')}",
            f"Accuracy on {curve.get('benchmark')} with its 95% interval at each t. {curve.get('verdict', '')}",
        )
        points = [p for p in curve.get("points") or [] if p.get("score") is not None]
        if len(points) < 2:
            figure.note = curve.get("note") or "fewer than two points of the curve were evaluated"
            out.append(figure)
            continue
        fig = _new_figure(5.5, 3.6)
        ax = fig.subplots()
        ts = [p["t"] for p in points]
        scores = [p["score"] * 100 for p in points]
        ax.fill_between(
            ts,
            [p["ci95"][0] * 100 for p in points],
            [p["ci95"][1] * 100 for p in points],
            color=PALETTE[0],
            alpha=0.2,
            linewidth=0,
        )
        ax.plot(ts, scores, marker="o", color=PALETTE[0])
        ax.axhline(
            max(scores[0], scores[-1]),
            color="#888888",
            linestyle="--",
            linewidth=0.8,
            label="better end",
        )
        ax.set_xlabel("t (the merge's interpolation weight)")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=8, frameon=False)
        _style(ax)
        figure.svg = to_svg(fig, figure.id)
        out.append(figure)
    return out


def loss_figure(study: dict[str, Any]) -> Figure:
    figure = Figure(
        "fig-loss",
        "Training loss of every training stage",
        "The logged training loss per optimizer step, one panel per stage kind (their losses differ in scale).",
    )
    stages = [s for s in study.get("training") or [] if s.get("loss_history")]
    if not stages:
        figure.note = "no training stage recorded a loss history"
        return figure
    kinds = list(dict.fromkeys(s["kind"] for s in stages))
    fig = _new_figure(4.2 * len(kinds) + 0.5, 3.4)
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds, strict=True):
        for i, stage in enumerate(s for s in stages if s["kind"] == kind):
            steps = [row[0] for row in stage["loss_history"]]
            losses = [row[1] for row in stage["loss_history"]]
            ax.plot(
                steps,
                losses,
                marker="." if len(steps) < 30 else None,
                color=PALETTE[i % len(PALETTE)],
                label=stage["stage"],
            )
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("step")
        ax.set_xlim(left=0)  # a run of one logged step still gets an axis of whole steps
        _integer_axis(ax.xaxis)
        ax.set_ylabel("loss")
        ax.legend(fontsize=7, frameon=False)
        _style(ax)
    figure.svg = to_svg(fig, figure.id)
    return figure


def schedule_figure(study: dict[str, Any]) -> Figure:
    figure = Figure(
        "fig-schedule",
        "Per-layer t of each merge",
        "SLERP's t per transformer layer for attention (solid) and MLP (dashed) tensors; t = 0 keeps the first "
        "(base) model, t = 1 the second. Merges with the same schedule share a panel.",
    )
    schedules = [s for s in study.get("schedules") or [] if s.get("layers")]
    if not schedules:
        notes = {s.get("note") for s in study.get("schedules") or []} - {None}
        figure.note = "; ".join(sorted(notes)) or "the study has no merges"
        return figure
    groups: dict[str, list[dict[str, Any]]] = {}
    for schedule in schedules:
        groups.setdefault(repr(schedule["layers"]), []).append(schedule)
    columns = min(len(groups), 3)
    rows = math.ceil(len(groups) / columns)
    fig = _new_figure(4.0 * columns + 0.5, 3.0 * rows + 0.4)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, group in zip(axes, groups.values(), strict=False):
        layers = group[0]["layers"]
        xs = [row["layer"] for row in layers]
        ax.plot(
            xs,
            [row["attention"] for row in layers],
            marker="o",
            color=PALETTE[0],
            label="attention",
        )
        ax.plot(
            xs,
            [row["mlp"] for row in layers],
            marker="s",
            linestyle="--",
            color=PALETTE[1],
            label="MLP",
        )
        names = ", ".join(s["merge"] for s in group)
        ax.set_title(names if len(names) < 60 else names[:57] + "...", fontsize=8)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("layer")
        _integer_axis(ax.xaxis)
        ax.set_ylabel("t")
        ax.legend(fontsize=7, frameon=False)
        _style(ax)
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    figure.svg = to_svg(fig, figure.id)
    return figure


def graph_layout(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, tuple[float, float]]:
    """Layered layout of a DAG: x = longest path from a root, y = rank within the layer."""
    parents: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        parents.setdefault(b, []).append(a)
        parents.setdefault(a, [])
    depth: dict[str, int] = {}

    def depth_of(node: str, trail: frozenset[str] = frozenset()) -> int:
        if node not in depth:
            ups = [p for p in parents[node] if p not in trail]
            depth[node] = 1 + max((depth_of(p, trail | {node}) for p in ups), default=-1)
        return depth[node]

    layers: dict[int, list[str]] = {}
    for node in parents:
        layers.setdefault(depth_of(node), []).append(node)
    positions: dict[str, tuple[float, float]] = {}
    for x in sorted(layers):
        members = layers[x]
        if x > 0:  # order a layer by the mean height of its parents: fewer crossing arrows
            members.sort(
                key=lambda n: (
                    -sum(positions[p][1] for p in parents[n] if p in positions)
                    / max(1, sum(1 for p in parents[n] if p in positions))
                )
            )
        for y, node in enumerate(members):
            positions[node] = (float(x), -(y - (len(members) - 1) / 2))
    return positions


def lineage_figure(study: dict[str, Any]) -> Figure:
    figure = Figure(
        "fig-lineage",
        "Lineage of the study's models",
        "Arrows go from a parent to the model built from it; merges are diamonds.",
    )
    graph = study.get("lineage") or {}
    nodes = graph.get("nodes") or []
    if not nodes:
        figure.note = "the plan lists no models"
        return figure
    edges = [tuple(e) for e in graph.get("edges") or []]
    positions = graph_layout([n["id"] for n in nodes], edges)  # type: ignore[arg-type]
    kinds = {n["id"]: n["kind"] for n in nodes}
    width = 2.6 * (max(x for x, _ in positions.values()) + 1) + 1
    height = (
        0.8 * max(sum(1 for x2, _ in positions.values() if x2 == x) for x, _ in positions.values())
        + 1
    )
    fig = _new_figure(width, max(height, 2.5))
    ax = fig.subplots()
    for a, b in edges:
        ax.annotate(
            "",
            xy=positions[b],
            xytext=positions[a],
            arrowprops={
                "arrowstyle": "-|>",
                "color": "#777777",
                "shrinkA": 14,
                "connectionstyle": "arc3,rad=0.06",
                "shrinkB": 14,
                "linewidth": 0.8,
            },
        )
    kind_colors: dict[str, str] = {}
    for node, (x, y) in positions.items():
        kind = kinds.get(node, "source")
        color = kind_colors.setdefault(kind, PALETTE[len(kind_colors) % len(PALETTE)])
        ax.scatter([x], [y], s=160, marker="D" if kind == "merge" else "o", color=color, zorder=3)
        ax.annotate(
            node, (x, y), textcoords="offset points", xytext=(0, 10), ha="center", fontsize=7
        )
    from matplotlib.lines import Line2D

    ax.legend(
        handles=[
            Line2D([], [], marker="D" if k == "merge" else "o", linestyle="", color=c, label=k)
            for k, c in kind_colors.items()
        ],
        fontsize=7,
        frameon=False,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    ax.margins(0.15, 0.25)
    ax.set_axis_off()
    figure.svg = to_svg(fig, figure.id)
    return figure


FIGURES: tuple[Callable[[dict[str, Any]], Figure | list[Figure]], ...] = (
    accuracy_figure,
    perplexity_figure,
    expected_figure,
    deviation_figure,
    correlation_figure,
    clusters_figure,
    curve_figures,
    loss_figure,
    schedule_figure,
    lineage_figure,
)


def all_figures(study: dict[str, Any]) -> list[Figure]:
    out: list[Figure] = []
    for draw in FIGURES:
        result = draw(study)
        out.extend(result if isinstance(result, list) else [result])
    return out
