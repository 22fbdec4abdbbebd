"""Pipeline YAML: validation with file/line/key, references, cycles, overrides, variables."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from alloylm.config.pipeline import apply_overrides
from alloylm.errors import ConfigError
from alloylm.pipeline.graph import topological_order
from alloylm.pipeline.load import load_pipeline
from alloylm.registry import STAGE_KINDS, Entry


@pytest.fixture(autouse=True)
def echo_kind(monkeypatch):
    entries = dict(STAGE_KINDS._entries)
    entries["echo"] = Entry("tests.unit.echo_stage", "test stage")
    monkeypatch.setattr(STAGE_KINDS, "_entries", entries)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_valid_pipeline_builds_dag_in_dependency_order(tmp_path):
    path = write(
        tmp_path,
        """\
        run: {name: t}
        stages:
          b: {kind: echo, model: "${stages.a.output}"}
          a: {kind: echo}
        """,
    )
    pipeline = load_pipeline(path)
    assert pipeline.stages["b"].depends_on == ["a"]
    assert topological_order(pipeline) == ["a", "b"]
    assert pipeline.output_dir == (tmp_path / "runs" / "t").resolve()


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    path = write(
        tmp_path,
        """\
        run: {name: t}
        stages:
          a:
            kind: echo
            mesage: hi
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    text = str(info.value)
    assert f"{path}:5" in text
    assert "stages.a.mesage" in text
    assert "did you mean 'message'" in text


def test_unknown_stage_kind_suggests(tmp_path):
    path = write(tmp_path, "run: {name: t}\nstages:\n  a: {kind: ehco}\n")
    with pytest.raises(ConfigError, match="did you mean 'echo'"):
        load_pipeline(path)


def test_missing_reference_is_reported_with_line(tmp_path):
    path = write(
        tmp_path,
        """\
        run: {name: t}
        stages:
          a: {kind: echo}
          b:
            kind: echo
            model: ${stages.aa.output}
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert (
        ":6" in str(info.value)
        and "unknown stage 'aa'" in str(info.value)
        and "did you mean 'a'" in str(info.value)
    )


def test_cycle_is_refused(tmp_path):
    path = write(
        tmp_path,
        """\
        run: {name: t}
        stages:
          a: {kind: echo, model: "${stages.b.output}"}
          b: {kind: echo, model: "${stages.a.output}"}
        """,
    )
    with pytest.raises(ConfigError, match="cycle: a -> b -> a"):
        load_pipeline(path)


def test_missing_data_file_is_reported(tmp_path):
    path = write(
        tmp_path, "run: {name: t}\nstages:\n  a: {kind: echo, data_files: [missing.jsonl]}\n"
    )
    with pytest.raises(ConfigError, match="data file not found"):
        load_pipeline(path)
    assert load_pipeline(path, check_data=False).stages["a"]


def test_model_input_from_a_data_stage_is_refused(tmp_path, monkeypatch):
    import tests.unit.echo_stage as echo

    path = write(
        tmp_path,
        """\
        run: {name: t}
        stages:
          a: {kind: echo}
          b: {kind: echo, model: "${stages.a.output}"}
        """,
    )
    monkeypatch.setattr(echo, "PRODUCES", "data")
    with pytest.raises(ConfigError, match="expects a model"):
        load_pipeline(path)


def test_dotted_overrides_and_vars(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    path = write(
        tmp_path,
        """\
        run: {name: t, seed: 1}
        vars: {file: d.jsonl}
        stages:
          a: {kind: echo, data_files: ["${vars.file}"]}
        """,
    )
    pipeline = load_pipeline(path, ["run.seed=7", "stages.a.message=bye"])
    assert pipeline.run.seed == 7
    assert pipeline.stages["a"].config.message == "bye"
    assert pipeline.stages["a"].config.data_files == [str(tmp_path / "d.jsonl")]


def test_override_of_unknown_section_suggests():
    with pytest.raises(ConfigError, match="did you mean 'stages'"):
        apply_overrides({"stages": {}}, ["stage.a.x=1"], "p.yaml")


def test_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, "run: {name: t}\nrun: {name: u}\nstages: {a: {kind: echo}}\n")
    with pytest.raises(ConfigError, match="duplicate key 'run'"):
        load_pipeline(path)


def test_unquoted_reference_in_flow_list_gets_a_hint(tmp_path):
    path = write(
        tmp_path,
        "run: {name: t}\nstages:\n  a: {kind: echo}\n  b:\n    kind: echo\n    x: [${stages.a.output}]\n",
    )
    with pytest.raises(ConfigError, match="quote"):
        load_pipeline(path)


def test_override_indexes_lists():
    data = {"stages": {"e": {"tasks": [{"limit": 1}, {"limit": 2}]}}}
    out = apply_overrides(data, ["stages.e.tasks.1.limit=9"], "p.yaml")
    assert out["stages"]["e"]["tasks"][1]["limit"] == 9
    assert data["stages"]["e"]["tasks"][1]["limit"] == 2  # the input is not modified
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides(data, ["stages.e.tasks.5.limit=1"], "p.yaml")
