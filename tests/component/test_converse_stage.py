"""Conversation scripts on tiny:llama: the converse stage and CLI, JSON turns checked per model
(never crashed on), and the judge stage reading the transcripts with a local judge model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alloylm.chat.conversations import (
    GenerationSettings,
    describe_model,
    load_script,
    run_script,
)
from alloylm.chat.judge import load_transcripts
from alloylm.cli.main import main
from alloylm.contract import StageContext
from alloylm.errors import ConfigError
from alloylm.generation.batching import Generation
from alloylm.stages import converse as converse_stage
from alloylm.stages import judge as judge_stage

SCRIPT = """\
name: two_turns
system: You are terse.
generation: {preset: study, seed: 7, max_new_tokens: 6}
turns:
  - {name: ask, user: "Name one protein in bone."}
  - name: summary
    user: "Answer as JSON with key protein."
    json: true
    schema: {type: object, required: [protein], properties: {protein: {type: string}}}
"""


@pytest.fixture()
def script_file(tmp_path: Path) -> Path:
    path = tmp_path / "script.yaml"
    path.write_text(SCRIPT)
    return path


def test_converse_stage_writes_a_transcript_per_model(
    tiny_llama, tiny_llama_other, script_file, tmp_path
):
    cfg = converse_stage.Config(
        kind="converse",
        script_file=str(script_file),
        models=["tiny:llama", "tiny:llama:1"],
        generation={"max_new_tokens": 5},
        threads=1,
    )
    assert {i.value for i in converse_stage.inputs(cfg)} == {
        str(script_file),
        "tiny:llama",
        "tiny:llama:1",
    }
    ctx = StageContext("talk", "t", 42, tmp_path / "work", tmp_path / "state", tmp_path)
    result = converse_stage.run(ctx, cfg)
    assert result.metrics["models"] == 2 and result.metrics["json_turns"] == 2
    files = sorted(p.name for p in (tmp_path / "work").iterdir())
    assert files == [
        "summary.json",
        "tiny_llama.json",
        "tiny_llama.md",
        "tiny_llama_1.json",
        "tiny_llama_1.md",
    ]
    data = json.loads((tmp_path / "work" / "tiny_llama.json").read_text())
    assert [m["role"] for m in data["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert data["settings"]["params"] == {
        "max_new_tokens": 5, "temperature": 1.0, "top_p": 0.9, "top_k": 512,
        "repetition_penalty": 1.1, "seed": 7,
    }  # fmt: skip
    assert [t["seed"] for t in data["turns"]] == [7, 8]  # seed + turn index
    assert all(t["completion_tokens"] <= 5 for t in data["turns"])
    assert data["model"]["model_hash"] and data["script"]["sha256"]
    # a random tiny model does not write JSON: reported, not raised
    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    row = summary["models"][0]
    assert (
        row["json_turns"] == 1 and row["json_valid"] == 0 and row["json_problems"][0]["turn"] == 1
    )
    markdown = (tmp_path / "work" / "tiny_llama.md").read_text()
    assert "## Turn 2: summary" in markdown and "JSON: **invalid**" in markdown
    # the same seed gives the same transcript
    again = converse_stage.run(
        StageContext("talk", "t", 42, tmp_path / "w2", tmp_path / "s2", tmp_path), cfg
    )
    assert (
        json.loads((tmp_path / "w2" / "tiny_llama.json").read_text())["messages"]
        == data["messages"]
    )
    assert again.metrics["json_valid"] == 0
    # the judge reads the folder: one transcript per model, the summary skipped
    refs = load_transcripts([tmp_path / "work"])
    assert sorted(r.label for r in refs) == ["tiny_llama", "tiny_llama_1"]

    # a local judge (tiny:llama writes no grades): every call fails to parse, is counted, and an
    # unchanged rerun in the same state folder makes no call
    judge_cfg = judge_stage.Config(
        kind="judge",
        paths=[str(tmp_path / "work")],
        judge={"type": "local", "model": "tiny:llama"},
        samples=1,
        max_tokens=4,
        parse_retries=1,
        resamples=10,
    )
    judged = judge_stage.run(
        StageContext("judged", "t", 1, tmp_path / "j", tmp_path / "js", tmp_path), judge_cfg
    )
    assert judged.metrics["judge_calls"] == 2 * 2 and judged.metrics["failed"] == 2
    assert json.loads((tmp_path / "j" / "judge.json").read_text())["calls"]["failed"] == {
        "unparsable_judge_single": 2
    }
    rerun = judge_stage.run(
        StageContext("judged", "t", 1, tmp_path / "j2", tmp_path / "js", tmp_path), judge_cfg
    )
    assert rerun.metrics["judge_calls"] == 0 and rerun.metrics["judge_cached"] == 4


class CannedGenerator:
    """Stands in for a ModelGenerator: answers from a list, records what it was asked."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)
        self.asked: list[list[dict[str, str]]] = []

    def complete(self, messages, params) -> Generation:
        self.asked.append(list(messages))
        return Generation(self.answers.pop(0), [1, 2, 3], 10, "stop")


def test_json_turns_are_extracted_and_schema_checked(script_file, tiny_llama):
    loaded = load_script(script_file)
    info = describe_model("tiny:llama", tiny_llama)
    settings = GenerationSettings(max_new_tokens=6)
    fenced = 'Here you go:\n```json\n{"protein": "collagen"}\n```\nAnything else?'
    good = run_script(loaded, CannedGenerator(["Collagen.", fenced]), info, settings)
    check = good.turns[1].json
    assert check["valid"] and check["value"] == {"protein": "collagen"}
    generator = CannedGenerator(["Collagen.", 'Sure: {"protein": 42} done'])
    wrong_type = run_script(loaded, generator, info, settings)
    assert wrong_type.turns[1].json["schema_errors"] == ["$.protein: expected string, got int"]
    # each model keeps its own history: the second turn sees the first answer
    assert generator.asked[1][-2] == {"role": "assistant", "content": "Collagen."}
    broken = run_script(
        loaded,
        CannedGenerator(
            ["x", '{"protein": "coll'],
        ),
        info,
        settings,
    )
    assert broken.turns[1].json["error"] == "a JSON object was started but does not parse"


def test_bad_scripts_are_config_errors(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nturns: [{user: hi, schema: {type: object}}]\n")
    with pytest.raises(ConfigError, match="json: true"):
        load_script(path)
    path.write_text("name: x\ngeneration: {preset: creative}\nturns: [{user: hi}]\n")
    with pytest.raises(ConfigError, match="unknown sampling preset"):
        load_script(path)
    path.write_text("name: x\nturns: []\n")
    with pytest.raises(ConfigError) as error:
        load_script(path)
    assert "turns" in str(error.value)
    with pytest.raises(ConfigError, match="collagen_leaves"):  # the shipped ones are listed
        load_script(tmp_path / "nope.yaml")


def test_shipped_scripts_load():
    for name in ("collagen_leaves", "image_prompt"):
        loaded = load_script(name)
        assert len(loaded.script.turns) == 3 and loaded.script.turns[-1].json_reply
        params = loaded.script.generation.params()
        assert (params.top_k, params.top_p, params.repetition_penalty, params.max_new_tokens) == (
            512, 0.9, 1.1, 1024,
        )  # fmt: skip


def test_two_models_with_one_name_get_their_own_files(tiny_llama, script_file, tmp_path):
    from alloylm.chat.conversations import converse

    loaded = load_script(script_file)
    settings = GenerationSettings(max_new_tokens=2)
    result = converse(loaded, [("tiny:llama", tiny_llama)] * 2, tmp_path, settings=settings,
                      threads=1, log=lambda m: None)  # fmt: skip
    assert [row["files"]["json"] for row in result.summary["models"]] == [
        "tiny_llama.json",
        "tiny_llama-2.json",
    ]
    assert [r.label for r in load_transcripts([tmp_path])] == ["tiny_llama", "tiny_llama-2"]


def test_cli_converse(tiny_llama, tmp_path, script_file, capsys):
    out = tmp_path / "out"
    argv = ["converse", str(script_file), "tiny:llama", "-o", str(out), "--name", "mini",
            "--max-new-tokens", "3", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "mini" in printed and "invalid JSON" in printed
    assert (out / "mini.md").is_file() and (out / "mini.json").is_file()
    assert main(["converse", str(script_file), "tiny:llama", "-o", str(out), "--top-p", "2"]) == 2
