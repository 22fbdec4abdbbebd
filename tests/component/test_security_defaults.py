"""Security defaults: pickle and remote code are opt-in per stage and recorded; a merge that
extrapolates says so; skipped records are counted and located; a teacher's API key is written
nowhere."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tests import faults

from alloylm.cli.main import main
from alloylm.models.sources import model_trust, trusted


def cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def pickle_model(tmp_path, tiny_llama) -> Path:
    """tiny:llama saved as pytorch_model.bin only (a pickle)."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_llama, folder)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


def eval_stage(model: Path, data: dict, **extra) -> dict:
    return {
        "eval": {
            "kind": "eval",
            "models": [str(model)],
            "protocols": ["cloze"],
            "resamples": 10,
            "workers": 1,
            "cache": False,
            "tasks": [{"path": data["mcq"], "type": "mcq", "name": "mcq"}],
            **extra,
        }
    }


@pytest.mark.timeout(180)
def test_pickle_weights_need_the_stage_opt_in_which_is_recorded(tmp_path, capsys, pickle_model):
    data = faults.write_data(tmp_path / "data")
    refused = faults.write_pipeline(tmp_path / "a", eval_stage(pickle_model, data))
    code, text = cli(["run", str(refused)], capsys)
    assert code == 1 and "Traceback" not in text
    assert "allow_pickle: true" in text and "pytorch_model.bin" in text

    allowed = faults.write_pipeline(
        tmp_path / "b", eval_stage(pickle_model, data, allow_pickle=[str(pickle_model)])
    )
    code, text = cli(["run", str(allowed)], capsys)
    assert code == 0, text
    manifest = json.loads((tmp_path / "b" / "out" / "eval" / "alloy.json").read_text())
    assert manifest["config"]["allow_pickle"] == [str(pickle_model)]
    assert manifest["config"]["trust_remote_code"] is False


def test_opt_ins_cover_only_the_named_models(tmp_path):
    named, other = tmp_path / "named", tmp_path / "other"
    named.mkdir()
    other.mkdir()
    assert not trusted("allow_pickle", named) and not trusted("trust_remote_code", named)
    with model_trust(allow_pickle=[str(named)], trust_remote_code=["org/model"]):
        assert trusted("allow_pickle", named) and not trusted("allow_pickle", other)
        assert trusted("trust_remote_code", "org/model")
        assert not trusted("trust_remote_code", named)
    with model_trust(trust_remote_code=True):
        assert trusted("trust_remote_code", other)
    assert not trusted("allow_pickle", named) and not trusted("trust_remote_code", "org/model")


@pytest.mark.timeout(180)
def test_merge_extrapolation_warns_in_the_log_and_alloy_json(
    tmp_path, capsys, tiny_llama, tiny_llama_other
):
    stages = {
        "merged": {
            "kind": "merge",
            "method": "slerp",
            "base_model": "tiny:llama",
            "models": ["tiny:llama:1"],
            "parameters": {"t": 1.7},
        }
    }
    code, text = cli(["run", str(faults.write_pipeline(tmp_path, stages))], capsys)
    assert code == 0, text
    assert "parameters.t = 1.7 is outside [0, 1]" in text
    manifest = json.loads((tmp_path / "out" / "merged" / "alloy.json").read_text())
    assert any("outside [0, 1]" in w for w in manifest["details"]["warnings"])


@pytest.mark.timeout(180)
def test_skipped_records_are_counted_and_located(tmp_path, capsys, tiny_llama):
    good = {"text": "the heart pumps blood through the arteries and the veins " * 3}
    lines = [
        json.dumps(good),
        json.dumps(good),
        "{broken",
        json.dumps({"body": "x"}),
        json.dumps(good),
    ]
    (tmp_path / "x.jsonl").write_text("\n".join(lines) + "\n")
    stage = {
        "kind": "cpt",
        "model": "tiny:llama",
        "data": [{"path": str(tmp_path / "x.jsonl")}],
        "train": {"max_steps": 1, "max_seq_length": 32, "per_device_batch_size": 1},
    }
    code, text = cli(["run", str(faults.write_pipeline(tmp_path, {"cpt": stage}))], capsys)
    assert code == 0, text
    details = json.loads((tmp_path / "out" / "cpt" / "alloy.json").read_text())["details"]
    source = details["sources"][0]
    assert source["bad_records"] == 2
    assert any("x.jsonl:3" in p for p in source["problems"])
    assert any("x.jsonl:4" in p for p in source["problems"])


@pytest.mark.timeout(240)
def test_the_teacher_api_key_is_written_nowhere(tmp_path):
    """Every file a distill run writes (artifact, state, cache, home) and its output, grepped."""
    data = faults.write_data(tmp_path / "data")
    home = tmp_path / "home"
    with faults.loopback_teacher() as (url, seen):
        stages = {"distill": faults.stage_configs(data, url)["distill"]}
        pipeline = faults.write_pipeline(tmp_path / "run", stages)
        os.environ["ALLOY_HOME"], before = str(home), os.environ.get("ALLOY_HOME")
        try:
            done = faults.run_alloy(pipeline)
        finally:
            if before is None:
                os.environ.pop("ALLOY_HOME")
            else:
                os.environ["ALLOY_HOME"] = before
    assert done.returncode == 0, done.output[-3000:]
    assert f"Bearer {faults.API_KEY}" in seen  # the key was sent to the teacher
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 3
    assert faults.files_holding(tmp_path, faults.API_KEY) == []
    assert faults.API_KEY not in done.output
    assert faults.API_KEY_ENV in (tmp_path / "run" / "out" / "distill" / "alloy.json").read_text()
