"""`alloy merge explain`: the t (or other parameter) each layer's attention and MLP get."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alloylm.merge.config import MergeSettings
from alloylm.merge.plan import LayerRow, explain_schedule, layer_position


def schedule_rows(
    settings: MergeSettings, layers: int, parameter: str = "t"
) -> dict[str, list[LayerRow]]:
    """Rows per variant name ('merge' without a sweep) for a model of `layers` layers."""
    rows = {}
    for name, parameters in settings.variants():
        if settings.slices:  # positions run over each slice, as the merge reads them
            rows[name or "merge"] = _slice_rows(settings, parameters, parameter)
            continue
        rows[name or "merge"] = _explained(parameters.get(parameter), layers)
    return rows


def _explained(setting: Any, layers: int) -> list[LayerRow]:
    """The rows of a setting; '-' everywhere when the method has no such parameter."""
    if setting is None:
        return [LayerRow(i, layer_position(i, layers), "-", "-") for i in range(layers)]
    return explain_schedule(setting, layers)


def _slice_rows(
    settings: MergeSettings, parameters: dict[str, Any], parameter: str
) -> list[LayerRow]:
    rows: list[LayerRow] = []
    for slice_ in settings.slices or []:
        setting = (slice_.parameters or {}).get(parameter, parameters.get(parameter))
        start, end = slice_.sources[0].layer_range
        for row in _explained(setting, end - start):
            rows.append(LayerRow(len(rows), row.position, row.attention, row.mlp))
    return rows


def slice_layout(settings: MergeSettings) -> list[str]:
    """Where each output layer comes from, a line per slice: the depth a `slices` merge builds."""
    lines, out = [], 0
    for slice_ in settings.slices or []:
        start, end = slice_.sources[0].layer_range
        takes = ", ".join(
            f"{s.model} layers {s.layer_range[0]}-{s.layer_range[1] - 1}" for s in slice_.sources
        )
        lines.append(f"output layers {out}-{out + end - start - 1}: {takes}")
        out += end - start
    return lines


def format_table(rows: dict[str, list[LayerRow]], parameter: str = "t") -> str:
    names = list(rows)
    header = ["layer", "pos"] + [f"{n}:attn" for n in names] + [f"{n}:mlp" for n in names]
    lines = ["  ".join(f"{h:>10}" for h in header)]
    layers = len(next(iter(rows.values())))
    for i in range(layers):
        first = rows[names[0]][i]
        cells = [f"{i:>10}", f"{first.position:>10.3f}"]
        cells += [_cell(rows[n][i].attention) for n in names] + [
            _cell(rows[n][i].mlp) for n in names
        ]
        lines.append("  ".join(cells))
    lines.append(
        f"({parameter} = 0 keeps the base model, 1 takes the other model; position = layer / (layers - 1))"
    )
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:>10.4f}" if isinstance(value, (int, float)) else f"{value!s:>10}"


def plot_schedule(rows: dict[str, list[LayerRow]], path: Path, parameter: str = "t") -> Path:
    """A small line plot: attention and MLP value per layer for each variant (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=120)
    for name, layer_rows in rows.items():
        xs = [r.layer for r in layer_rows]
        line = ax.plot(
            xs,
            [r.attention for r in layer_rows],
            marker="o",
            markersize=3,
            label=f"{name} self_attn",
        )[0]
        ax.plot(
            xs,
            [r.mlp for r in layer_rows],
            linestyle="--",
            color=line.get_color(),
            label=f"{name} mlp",
        )
    ax.set_xlabel("layer")
    ax.set_ylabel(parameter)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
