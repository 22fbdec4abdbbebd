"""Terminal display: live stage progress and the end-of-run summary table (rich)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from alloylm.contract import Progress as StageProgress

# Lines may be this long when the output is not a terminal: a pipe or a file gets every name
# and path whole, on one line, for grep and scripts.
UNLIMITED_WIDTH = 10_000


def output_console(*, stderr: bool = False) -> Console:
    """A console whose tables never cut a name: terminal width on a terminal, else unlimited.

    Emoji codes are off, so that names such as tiny:llama:1 print as they are.
    """
    probe = Console(stderr=stderr)
    width = None if probe.is_terminal else UNLIMITED_WIDTH
    return Console(stderr=stderr, emoji=False, width=width)


def add_name_column(table: Table, header: str, **options: Any) -> None:
    """A column of identifiers or paths: folded onto more lines when narrow, never cut with '…'."""
    table.add_column(header, overflow="fold", **options)


console = output_console(stderr=True)


class RichStageProgress(StageProgress):
    """Step, loss, tokens/s and time left for one stage."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._bar: Progress | None = None
        self._task: Any = None
        self._started = time.time()

    def start(self, total: int | None, description: str = "") -> None:
        self.finish()
        self._bar = Progress(
            TextColumn(f"[bold cyan]{self.stage}[/] {description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, info="")

    def update(self, step: int, **fields: Any) -> None:
        if self._bar is None:
            self.start(fields.pop("total", None))
        info = "  ".join(
            _format_field(k, v) for k, v in fields.items() if v is not None and k != "total"
        )
        self._bar.update(
            self._task,
            completed=step,
            info=info,
            total=fields.get("total") or self._bar.tasks[0].total,
        )

    def log(self, message: str) -> None:
        # Model names such as tiny:llama:1 must not be read as rich markup or emoji codes.
        console.print(message, markup=False, emoji=False, highlight=False)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _format_field(key: str, value: Any) -> str:
    if key == "loss":
        return f"loss {value:.4f}"
    if key == "tokens_per_s":
        return f"{value:,.0f} tok/s"
    if key == "eta_s":
        return ""
    if isinstance(value, float):
        return f"{key} {value:.4g}"
    return f"{key} {value}"


def summary_table(outcomes: list[Any], title: str) -> Table:
    table = Table(title=Text(title), title_justify="left")
    add_name_column(table, "stage")
    add_name_column(table, "kind")
    table.add_column("status")
    table.add_column("time", no_wrap=True)
    table.add_column("key result")
    add_name_column(table, "artifact")
    colors = {"built": "green", "skipped": "cyan", "failed": "red", "not run": "yellow"}
    for outcome in outcomes:
        table.add_row(
            Text(outcome.name),  # Text: a name or path with [brackets] is not rich markup
            Text(outcome.kind),
            Text(outcome.status, style=colors.get(outcome.status, "white")),
            f"{outcome.wall_s:,.1f} s" if outcome.wall_s else "-",
            Text(key_result(outcome.metrics)),
            Text(str(outcome.path)),
        )
    return table


def key_result(metrics: dict[str, Any]) -> str:
    """The one number that says how a stage went, for the summary table."""
    for key in ("summary", "final_loss", "train_loss", "accuracy", "n_models"):
        if key in metrics and not isinstance(metrics[key], (dict, list)):
            value = metrics[key]
            return f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
    return ""
