"""Runner: build in order, skip by content hash, force/only, atomic failure, lineage."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

import tests.unit.echo_stage as echo
from alloylm.errors import AlloyError
from alloylm.lineage import lineage_tree, read_manifest
from alloylm.pipeline.load import load_pipeline
from alloylm.pipeline.runner import PipelineRunner
from alloylm.registry import STAGE_KINDS, Entry

PIPELINE = """\
run: {name: t, seed: 3, output: out}
stages:
  a: {kind: echo, data_files: [d.txt]}
  b: {kind: echo, model: "${stages.a.output}", message: "${stages.a.output}"}
"""


@pytest.fixture(autouse=True)
def echo_kind(monkeypatch):
    entries = dict(STAGE_KINDS._entries)
    entries["echo"] = Entry("tests.unit.echo_stage", "test stage")
    monkeypatch.setattr(STAGE_KINDS, "_entries", entries)
    echo.CALLS.clear()


@pytest.fixture()
def pipeline_file(tmp_path):
    (tmp_path / "d.txt").write_text("some text")
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(PIPELINE))
    return path


def run(path, *overrides, **kwargs):
    return PipelineRunner(load_pipeline(path, list(overrides)), **kwargs).run()


def test_builds_in_order_and_writes_manifests(pipeline_file, tmp_path):
    outcomes = run(pipeline_file)
    assert [o.status for o in outcomes] == ["built", "built"]
    assert echo.CALLS == ["a", "b"]
    out = tmp_path / "out"
    b = read_manifest(out / "b")
    assert b["parents"][0]["stage"] == "a"
    assert b["parents"][0]["hash"] == read_manifest(out / "a")["content_hash"]
    assert b["seed"] == 3 and b["versions"]["alloylm"]
    # references are resolved to the absolute artifact path before the stage runs
    assert json.loads((out / "b" / "echo.json").read_text())["message"] == str(out / "a")
    assert (out / "b" / "README.md").exists()


def test_second_run_skips_everything(pipeline_file):
    run(pipeline_file)
    echo.CALLS.clear()
    outcomes = run(pipeline_file)
    assert [o.status for o in outcomes] == ["skipped", "skipped"]
    assert echo.CALLS == []


def test_changed_data_rebuilds_stage_and_dependents(pipeline_file, tmp_path):
    run(pipeline_file)
    (tmp_path / "d.txt").write_text("other text")
    echo.CALLS.clear()
    assert [o.status for o in run(pipeline_file)] == ["built", "built"]


def test_changed_config_rebuilds_only_downstream(pipeline_file):
    run(pipeline_file)
    echo.CALLS.clear()
    outcomes = run(pipeline_file, "stages.b.message=new")
    assert [o.status for o in outcomes] == ["skipped", "built"]


def test_force_and_only(pipeline_file):
    run(pipeline_file)
    echo.CALLS.clear()
    assert [o.status for o in run(pipeline_file, force={"b"})] == ["skipped", "built"]
    # forcing a stage rebuilds what follows it: its new output is their input
    assert [o.status for o in run(pipeline_file, force={"a"})] == ["built", "built"]
    echo.CALLS.clear()
    outcomes = run(pipeline_file, only={"b"}, force={"b"})
    assert [(o.name, o.status) for o in outcomes] == [("b", "built")]
    with pytest.raises(AlloyError, match="no stage named"):
        run(pipeline_file, force={"zz"})


def test_only_refuses_when_inputs_missing(pipeline_file):
    with pytest.raises(AlloyError, match="has not been built yet"):
        run(pipeline_file, only={"b"})


def test_failed_stage_leaves_no_artifact_and_stops(pipeline_file, tmp_path):
    outcomes = run(pipeline_file, "stages.a.fail=true")
    assert [o.status for o in outcomes] == ["failed", "not run"]
    assert "failed on purpose" in outcomes[0].error
    out = tmp_path / "out"
    assert not (out / "a").exists()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_stale_temporary_from_killed_run_is_cleaned(pipeline_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".a.tmp-999999999-deadbeef"  # a pid that cannot be alive
    stale.mkdir()
    (stale / "partial.safetensors").write_text("half")
    run(pipeline_file)
    assert not stale.exists()
    assert (out / "a" / "alloy.json").exists()


def test_rebuild_replaces_artifact_atomically(pipeline_file, tmp_path):
    run(pipeline_file)
    run(pipeline_file, "stages.a.message=v2")
    data = json.loads((tmp_path / "out" / "a" / "echo.json").read_text())
    assert data["message"] == "v2"
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "a",
        "b",
    ]


def test_lineage_tree_goes_back_to_source(pipeline_file, tmp_path):
    run(pipeline_file)
    tree = lineage_tree(tmp_path / "out" / "b")
    assert tree["stage"] == "b"
    a = tree["parents"][0]
    assert a["stage"] == "a"
    assert a["parents"][0]["source"] == "tiny:llama"


def test_cli_run_and_lineage(pipeline_file, tmp_path, capsys):
    from alloylm.cli.main import main

    assert main(["run", str(pipeline_file)]) == 0
    assert main(["run", str(pipeline_file)]) == 0
    assert main(["lineage", str(tmp_path / "out" / "b"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["parents"][0]["stage"] == "a"
    assert main(["validate", str(pipeline_file)]) == 0
    assert main(["run", str(pipeline_file), "stages.a.mesage=x"]) == 2


def test_state_dir_checkpoints_cleared_when_hash_changes(pipeline_file, tmp_path):
    pipeline = load_pipeline(pipeline_file)
    runner = PipelineRunner(pipeline)
    state = runner._prepare_state_dir("a", "hash1")
    (state / "checkpoints").mkdir()
    (state / "cache.bin").write_text("kept")
    runner._prepare_state_dir("a", "hash1")
    assert (state / "checkpoints").exists()
    runner._prepare_state_dir("a", "hash2")
    assert not (state / "checkpoints").exists() and (state / "cache.bin").exists()
    assert os.path.basename(state) == "a"


def test_lineage_shows_a_shared_ancestor_once(tmp_path):
    (tmp_path / "d.txt").write_text("x")
    path = tmp_path / "p.yaml"
    path.write_text(
        "run: {name: t, output: out}\n"
        "stages:\n"
        "  a: {kind: echo}\n"
        "  b: {kind: echo, model: '${stages.a.output}'}\n"
        "  c: {kind: echo, model: '${stages.b.output}', data_files: ['${stages.a.output}/echo.json']}\n"
    )
    run(path)
    tree = lineage_tree(tmp_path / "out" / "c")
    b, a_again = tree["parents"]
    assert b["stage"] == "b" and b["parents"][0]["stage"] == "a"
    assert a_again["stage_ref"] == "a" and a_again["parents"] == []
