"""`-v` before or after the command (issue 11, defect 9); tables that never cut names (defect 10)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alloylm.cli.main import chosen_command, main
from alloylm.errors import ConfigError


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["run", "p.yaml"], "run"),
        (["-v", "run", "p.yaml"], "run"),
        (["--verbose", "validate", "-v", "p.yaml"], "validate"),
        (["run", "-v", "p.yaml"], "run"),
        (["-v", "models", "ls"], "models"),
        (["--help"], None),
        ([], None),
        (["nonsense"], None),
    ],
)
def test_the_command_is_found_by_parsing(argv, command):
    assert chosen_command(argv) == command


@pytest.mark.parametrize(
    "argv",
    [["-v", "validate", "missing.yaml"], ["validate", "-v", "missing.yaml"]],
)
def test_verbose_before_or_after_the_command_shows_the_traceback(argv, tmp_path):
    missing = str(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="file not found"):  # -v: the error is raised, not printed
        main([missing if arg == "missing.yaml" else arg for arg in argv])


def test_without_verbose_the_error_is_one_line(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "error: file not found" in capsys.readouterr().err


def test_verbose_after_a_subcommand_action(capsys):
    assert main(["models", "ls", "-v"]) == 0
    assert main(["-v", "models", "ls", "--json"]) == 0


def test_verbose_help_imports_no_command_module():
    code = (
        "import sys, alloylm.cli.main as m\n"
        "try:\n    m.main(['-v', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(n for n in sys.modules if n.startswith('alloylm.cli.') and n != 'alloylm.cli.main'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "LOADED []" in out


# ------------------------------------------------------------------ tables in pipes
def _alloy_stdout(*args: str, env_columns: str = "40") -> str:
    """stdout of `alloy ARGS` piped (not a terminal), on a narrow COLUMNS."""
    import os

    env = {**os.environ, "COLUMNS": env_columns}
    return subprocess.run(
        [sys.executable, "-m", "alloylm.cli.main", *args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout


def test_models_ls_in_a_pipe_keeps_whole_names():
    out = _alloy_stdout("models", "ls")
    assert "embedded:smollm2-135m-instruct" in out  # `alloy models ls | grep smollm2` finds it
    assert "…" not in out


def test_ls_in_a_pipe_keeps_whole_names():
    out = _alloy_stdout("ls", "merge")
    assert "…" not in out
    assert "slerp" in out


def test_models_ls_json(capsys):
    assert main(["models", "ls", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    sources = {row["source"] for row in rows}
    assert "embedded:smollm2-135m-instruct" in sources
    assert all({"source", "state"} <= set(row) for row in rows)


def test_ls_json(capsys):
    from alloylm.registry import ALL_TABLES

    assert main(["ls", "--json"]) == 0
    tables = json.loads(capsys.readouterr().out)
    assert set(tables) == {registry.kind for registry in ALL_TABLES}
    merge = next(r for r in ALL_TABLES if "merge" in r.kind)
    assert {row["name"] for row in tables[merge.kind]} == set(dict(merge.items()))
    assert all(row["summary"] for rows in tables.values() for row in rows)


def test_summary_table_wraps_long_paths_instead_of_cutting_them():
    from types import SimpleNamespace

    from rich.console import Console

    from alloylm.cli.display import summary_table

    path = "/very/long/runs/quickstart/" + "x" * 120 + "/sft-merged-with-a-long-name"
    outcome = SimpleNamespace(
        name="merge", kind="merge", status="built", wall_s=1.5, metrics={}, path=path
    )
    console = Console(width=60, file=__import__("io").StringIO(), force_terminal=False)
    console.print(summary_table([outcome], "run"))
    text = console.file.getvalue()
    assert "…" not in text
    joined = "".join(
        line.split("│")[-2].strip() for line in text.splitlines() if line.count("│") >= 2
    )
    assert path in joined
