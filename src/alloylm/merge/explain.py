"""`alloy merge explain`: the t (or other parameter) each layer's attention and MLP get."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alloylm.merge.config import MergeSettings
from alloylm.merge.plan import LayerRow, explain_schedule


def schedule_rows(
    settings: MergeSettings, layers: int, parameter: str = "t"
) -> dict[str, list[LayerRow]]:
    """Rows per variant name ('merge' without a sweep) for a model of `layers` layers."""
    rows = {}
    for name, parameters in settings.variants():
        setting: Any = parameters.get(parameter)
        if setting is None and settings.slices and settings.slices[0].parameters:
            setting = settings.slices[0].parameters.get(parameter)
        rows[name or "merge"] = explain_schedule(setting, layers)
    return rows


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
