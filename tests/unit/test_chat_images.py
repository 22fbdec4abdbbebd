"""`alloy render` without a GPU: the prompt picked out of an image_prompt transcript, the
option checks, and the messages when diffusers or CUDA is missing (the rendering itself is
tests/gpu/test_render_gpu.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from alloylm.chat import images
from alloylm.chat.conversations import GenerationSettings, ModelInfo, load_script, run_script
from alloylm.chat.images import (
    RenderSettings,
    check_settings,
    final_prompt,
    prompt_from_argument,
    require_diffusers_and_cuda,
)
from alloylm.cli.main import main
from alloylm.errors import ConfigError, DataError

PRINCIPLES = "1. Veins spread load. 2. Layered walls stop cracks."
LONG_PROMPT = "A lattice of green veins in translucent resin, macro photograph, soft light."


class ScriptedGenerator:
    """Answers each turn with the next fixed reply (what `ModelGenerator.complete` returns)."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)

    def complete(self, messages: list[dict[str, str]], params: Any) -> SimpleNamespace:
        text = self.replies.pop(0)
        return SimpleNamespace(
            text=text, prompt_tokens=10, completion_tokens=5, finish_reason="stop"
        )


def image_prompt_transcript(last_reply: str) -> dict[str, Any]:
    """A transcript of the shipped image_prompt script, written by the conversations code."""
    loaded = load_script("image_prompt")
    model = ModelInfo(source="tiny:llama", name="tiny", folder="/models/tiny")
    generator = ScriptedGenerator([PRINCIPLES, LONG_PROMPT, last_reply])
    transcript = run_script(loaded, generator, model, GenerationSettings())
    return json.loads(json.dumps(transcript.as_dict()))  # its JSON form, as on disk


def test_the_final_prompt_is_the_last_turns_json_prompt() -> None:
    reply = 'Here it is:\n```json\n{"prompt": "  green vein lattice, resin, macro  "}\n```'
    prompt, where = final_prompt(image_prompt_transcript(reply))
    assert prompt == "green vein lattice, resin, macro"
    assert where == "the JSON field 'prompt' of turn 'short_prompt'"


def test_broken_json_falls_back_to_the_last_assistant_message() -> None:
    reply = 'prompt: "green vein lattice'  # no JSON object
    transcript = image_prompt_transcript(reply)
    assert transcript["turns"][-1]["json"]["parsed"] is False
    assert final_prompt(transcript) == (reply, "the last assistant message")
    # a JSON object without a string "prompt" falls back too
    transcript = image_prompt_transcript('{"prompt": 3}')
    assert final_prompt(transcript) == ('{"prompt": 3}', "the last assistant message")


def test_a_transcript_with_nothing_to_render_names_the_file() -> None:
    empty = {"messages": [{"role": "user", "content": "hi"}], "turns": []}
    with pytest.raises(DataError) as error:
        final_prompt(empty, source="t.json")
    assert "t.json" in error.value.render() and "alloy converse" in error.value.render()


def test_the_argument_is_a_prompt_a_text_file_or_a_transcript(tmp_path: Path) -> None:
    assert prompt_from_argument("a leaf-inspired lattice.json") == (
        "a leaf-inspired lattice.json",
        "the command line",
    )  # has blanks: a prompt, not a file name
    text = tmp_path / "prompt.txt"
    text.write_text("  veins in resin \n")
    assert prompt_from_argument(str(text)) == ("veins in resin", str(text))
    spaced = tmp_path / "my prompt.txt"  # an existing file is read, blanks in its name or not
    spaced.write_text("resin")
    assert prompt_from_argument(str(spaced)) == ("resin", str(spaced))
    transcript = tmp_path / "tiny.json"
    transcript.write_text(json.dumps(image_prompt_transcript('{"prompt": "vein lattice"}')))
    prompt, where = prompt_from_argument(str(transcript))
    assert prompt == "vein lattice" and where.startswith(str(transcript))
    for content, expected in (("{broken", "not valid JSON"), ("[1, 2]", "JSON object")):
        transcript.write_text(content)
        with pytest.raises(DataError, match=expected):
            prompt_from_argument(str(transcript))
    with pytest.raises(DataError, match="no such file"):
        prompt_from_argument(str(tmp_path / "missing.json"))


def _settings(**changes: Any) -> RenderSettings:
    return RenderSettings(**{"prompt": "veins", "base_model": "flux", **changes})


@pytest.mark.parametrize(
    ("changes", "out", "key"),
    [
        ({"steps": 0}, "a.png", "--steps"),
        ({"guidance": -1.0}, "a.png", "--guidance"),
        ({"dtype": "int8"}, "a.png", "--dtype"),
        ({"width": 1000}, "a.png", "--width"),
        ({"height": 8}, "a.png", "--height"),
        ({"prompt": "  "}, "a.png", "PROMPT"),
        ({"base_model": ""}, "a.png", "--base"),
        ({"lora_weight_name": "w.safetensors"}, "a.png", "--lora-weight-name"),
        ({}, "a.gif", "-o"),
        ({}, "image", "-o"),
    ],
)
def test_bad_options_are_named(changes: dict, out: str, key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        check_settings(_settings(**changes), tmp_path / out)
    assert error.value.key == key


def test_the_study_defaults_pass_and_a_folder_is_no_output(tmp_path: Path) -> None:
    settings = _settings(lora="lamm-mit/leaf-FLUX.1-dev", lora_weight_name="leaf-flux.safetensors")
    assert (settings.steps, settings.guidance, settings.dtype) == (25, 3.5, "bfloat16")
    assert check_settings(settings, tmp_path / "leaf.PNG") == tmp_path / "leaf.PNG"
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        check_settings(settings, tmp_path / "dir.png")


def test_missing_diffusers_then_missing_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "cuda_available", lambda: True)
    monkeypatch.setattr(images, "diffusers_installed", lambda: False)
    with pytest.raises(ConfigError) as error:
        require_diffusers_and_cuda()
    assert "diffusers" in error.value.message and "alloylm[images]" in (error.value.hint or "")
    monkeypatch.setattr(images, "diffusers_installed", lambda: True)
    monkeypatch.setattr(images, "cuda_available", lambda: False)
    with pytest.raises(ConfigError) as error:
        require_diffusers_and_cuda()
    assert "CUDA GPU" in error.value.message
    monkeypatch.setattr(images, "cuda_available", lambda: True)
    require_diffusers_and_cuda()  # both there: no error


def test_render_checks_before_it_loads_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(images, "diffusers_installed", lambda: False)
    monkeypatch.setattr(images, "_generate", lambda settings: pytest.fail("must not generate"))
    with pytest.raises(ConfigError, match="diffusers"):
        images.render("veins", "flux", out=tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


def test_cli_errors_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "leaf.png")
    monkeypatch.setattr(images, "diffusers_installed", lambda: False)
    assert main(["render", "a vein lattice", "--base", "flux", "-o", out]) == 2
    err = capsys.readouterr().err
    assert "diffusers" in err and "pip install" in err and "Traceback" not in err
    monkeypatch.setattr(images, "diffusers_installed", lambda: True)
    monkeypatch.setattr(images, "cuda_available", lambda: False)
    assert main(["render", "a vein lattice", "--base", "flux", "-o", out]) == 2
    err = capsys.readouterr().err
    assert "CUDA GPU" in err and "Traceback" not in err
    # an option is checked first, whatever the machine has
    assert main(["render", "veins", "--base", "flux", "-o", out, "--steps", "0"]) == 2
    assert "[--steps]" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "none.json"), "--base", "flux", "-o", out]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "leaf.png").exists()
