"""`alloy report RUN_DIR`: the study report of a finished (or partly finished) study run."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Analyse a study run and write its report: report.html (one file that opens offline: tables and
figures inline, no network request), study.json (every number, with intervals) and models.csv /
merges.csv, by default in RUN_DIR/report/.

RUN_DIR is the study's output folder: it holds study_plan.json (written by `alloy study run`)
and the eval stage's results. The report shows per model accuracy per benchmark and overall with
95% bootstrap intervals, relative improvement over the baseline, held-out perplexity; per merge
the parents' scores P1, P2, E = (P1 + P2) / 2, the merge's gains over E and over its best parent
with paired intervals, parent diversity and disagreement, the tensors SLERP took spherically, emergent and
lost questions; across merges the correlation of attributes and the clusters on (E, A); the
interpolation curves, training losses, per-layer t schedules and the lineage graph.
`alloy study run` writes the report at its end; run this to rewrite it (nothing is re-scored).
"""

EPILOG = """\
examples:
  alloy report runs/study_cpu                 writes runs/study_cpu/report/report.html
  alloy report runs/study_cpu -o /tmp/out     writes the report into /tmp/out
"""


# the terminal is narrower than the page: the merge table's key columns (all are in the HTML)
TERMINAL_MERGE_COLUMNS = ("merge", "P1", "P2", "E", "A", "A vs both parents", "SLERP spherical")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the study's output folder")
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="folder for report.html, study.json and the CSV files (default: RUN_DIR/report)",
    )
    parser.add_argument(
        "--correction",
        choices=("holm", "none"),
        default=None,
        help="multiplicity correction within each family of verdicts (default: holm; 'none' "
        "tests every verdict alone at 5%%: docs/study.md)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print only the report's path, not the summary tables"
    )


def run(args: argparse.Namespace) -> int:
    import time

    from alloylm.analysis.report import write_report

    started = time.perf_counter()
    path = write_report(args.run_dir, out_dir=args.output, correction=args.correction)
    elapsed = time.perf_counter() - started
    if not args.quiet:
        print_summary(path)
    print(f"report: {path}  ({elapsed:.1f} s)")
    return 0


def print_summary(report_path: Path) -> None:
    """The models and merges tables of a written report (from the study.json beside it), on stderr
    like every table of alloy; `alloy study run` can call this after write_report too."""
    import json

    from rich.table import Table
    from rich.text import Text

    from alloylm.analysis.report import merge_rows, slerp_paths, summary_rows
    from alloylm.cli.display import console

    study = json.loads((report_path.parent / "study.json").read_text(encoding="utf-8"))
    merge_header, merges = merge_rows(study)
    keep = [merge_header.index(c) for c in TERMINAL_MERGE_COLUMNS]
    for title, (header, rows) in (
        (f"study {study.get('study') or ''}: models", summary_rows(study, curve_points=False)),
        (
            f"merges on {study.get('headline')}",
            ([merge_header[i] for i in keep], [[row[i] for i in keep] for row in merges]),
        ),
    ):
        if not rows:
            continue
        table = Table(title=title, title_justify="left")
        for column in header:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))
        console.print(table)
    if paths := slerp_paths(study):
        console.print(Text(paths))
    confirmed = study.get("confirmed") or {}
    for claim in confirmed.get("claims") or []:
        console.print(Text(f"confirmed on {confirmed['benchmark']}: {claim['claim']} "
                           f"({claim['model']}): {claim['verdict']}"))  # fmt: skip
    for matrix in study.get("strategies") or []:
        group = f"{matrix['lineage']}{', merged' if matrix['merged'] else ''}"
        console.print(Text(f"strategies ({group}): {matrix['verdict']}"))
    for family in (study.get("verdicts") or {}).get("families") or []:
        console.print(Text(family["sentence"]))
    for note in study.get("notes") or []:
        console.print(Text(f"note: {note}"))
