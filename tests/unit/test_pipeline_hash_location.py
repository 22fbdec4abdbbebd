"""Content hashes do not depend on where the project lies: a moved or copied project is skipped."""

from __future__ import annotations

import shutil
import textwrap

import pytest

import tests.unit.echo_stage as echo
from alloylm.pipeline.load import load_pipeline
from alloylm.pipeline.runner import PipelineRunner
from alloylm.registry import STAGE_KINDS, Entry

PIPELINE = """\
run: {name: t, seed: 3, output: out}
stages:
  a: {kind: echo, data_files: [data/d.txt, "${data}/bench/q.jsonl"]}
  b: {kind: echo, model: "${stages.a.output}", data_files: [data]}
"""


@pytest.fixture(autouse=True)
def echo_kind(monkeypatch, tmp_path):
    entries = dict(STAGE_KINDS._entries)
    entries["echo"] = Entry("tests.unit.echo_stage", "test stage")
    monkeypatch.setattr(STAGE_KINDS, "_entries", entries)
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    echo.CALLS.clear()


def make_project(root):
    (root / "data").mkdir(parents=True)
    (root / "data" / "d.txt").write_text("some text")
    (root / "p.yaml").write_text(textwrap.dedent(PIPELINE))


def make_data_root(root):
    (root / "bench").mkdir(parents=True)
    (root / "bench" / "q.jsonl").write_text('{"question": "q"}\n')


def statuses(pipeline_file):
    return [o.status for o in PipelineRunner(load_pipeline(pipeline_file)).run()]


def test_a_copied_project_is_skipped(tmp_path, monkeypatch):
    make_data_root(tmp_path / "data-root")
    monkeypatch.setenv("ALLOY_DATA", str(tmp_path / "data-root"))
    make_project(tmp_path / "first")
    assert statuses(tmp_path / "first" / "p.yaml") == ["built", "built"]
    # a plain copy: new absolute paths and new mtimes, the same bytes
    shutil.copytree(tmp_path / "first", tmp_path / "renamed", copy_function=shutil.copyfile)
    echo.CALLS.clear()
    assert statuses(tmp_path / "renamed" / "p.yaml") == ["skipped", "skipped"]
    assert echo.CALLS == []
    # ... and the content still counts
    (tmp_path / "renamed" / "data" / "d.txt").write_text("other text")
    assert statuses(tmp_path / "renamed" / "p.yaml") == ["built", "built"]


def test_a_moved_data_root_keeps_the_hashes(tmp_path, monkeypatch):
    make_data_root(tmp_path / "root-a")
    shutil.copytree(tmp_path / "root-a", tmp_path / "root-b", copy_function=shutil.copyfile)
    make_project(tmp_path / "project")
    monkeypatch.setenv("ALLOY_DATA", str(tmp_path / "root-a"))
    assert statuses(tmp_path / "project" / "p.yaml") == ["built", "built"]
    monkeypatch.setenv("ALLOY_DATA", str(tmp_path / "root-b"))
    assert statuses(tmp_path / "project" / "p.yaml") == ["skipped", "skipped"]


def test_a_copied_local_model_folder_has_the_same_identity(tmp_path):
    from alloylm.pipeline.runner import model_identity

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    shutil.copytree(model, tmp_path / "copy", copy_function=shutil.copyfile)
    assert model_identity(str(model)) == model_identity(str(tmp_path / "copy"))
    (tmp_path / "copy" / "evals").mkdir()  # files beside the model are not the model
    (tmp_path / "copy" / "evals" / "result.json").write_text("{}")
    (tmp_path / "copy" / "README.md").write_text("a card")
    assert model_identity(str(model)) == model_identity(str(tmp_path / "copy"))
    (tmp_path / "copy" / "model.safetensors").write_bytes(b"other weights")
    assert model_identity(str(model)) != model_identity(str(tmp_path / "copy"))


def test_a_gguf_model_counts_by_its_bytes(tmp_path):
    from alloylm.pipeline.runner import model_identity

    folder = tmp_path / "gguf-folder"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(b"GGUF one")
    single = tmp_path / "model.gguf"
    single.write_bytes(b"GGUF one")
    before = model_identity(str(folder)), model_identity(str(single))
    (folder / "model.gguf").write_bytes(b"GGUF two")
    single.write_bytes(b"GGUF two")
    assert model_identity(str(folder)) != before[0]
    assert model_identity(str(single)) != before[1]
