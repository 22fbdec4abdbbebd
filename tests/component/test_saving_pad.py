"""finalize_model_files reads the pad token from tokenizer_config.json when that settles it
(no transformers import), and then agrees with the tokenizer transformers loads; where it cannot
settle it (a special_tokens_map.json, pad == EOS, a pad not in the vocabulary) it defers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from alloylm.models.saving import _picked_pad, declared_pad, finalize_model_files


def _copy(source: Path, target: Path, **config_changes) -> Path:
    shutil.copytree(source, target)
    path = target / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(config_changes)
    path.write_text(json.dumps(config))
    return target


def test_the_declared_pad_is_the_one_transformers_picks(tiny_llama, tmp_path):
    config = json.loads((tiny_llama / "tokenizer_config.json").read_text())
    declared = declared_pad(tiny_llama, config)
    assert declared is not None and declared[0] != config["eos_token"]
    assert declared == _picked_pad(tiny_llama)
    # the {"content": ...} form of a special token reads the same
    folder = _copy(tiny_llama, tmp_path / "dict-form", pad_token={"content": declared[0]})
    assert (
        declared_pad(folder, json.loads((folder / "tokenizer_config.json").read_text())) == declared
    )


def test_undecided_cases_defer_to_transformers(tiny_llama, tmp_path):
    config = json.loads((tiny_llama / "tokenizer_config.json").read_text())
    eos = config["eos_token"]
    same_as_eos = _copy(tiny_llama, tmp_path / "pad-is-eos", pad_token=eos)
    unknown = _copy(tiny_llama, tmp_path / "unknown-pad", pad_token="<not-a-token>")
    mapped = _copy(tiny_llama, tmp_path / "mapped")
    (mapped / "special_tokens_map.json").write_text(json.dumps({"pad_token": eos}))
    for folder in (same_as_eos, unknown, mapped):
        settled = json.loads((folder / "tokenizer_config.json").read_text())
        assert declared_pad(folder, settled) is None, folder.name
    # pad == EOS: transformers' tokenizer is loaded and pick_pad_token moves the pad off EOS
    decided = finalize_model_files(same_as_eos)
    assert decided["pad_token"] != eos
    assert decided == dict(
        zip(("pad_token", "pad_token_id"), _picked_pad(same_as_eos), strict=True)
    )


def test_a_tokenizer_file_is_parsed_once_per_content(tiny_llama, tmp_path, monkeypatch):
    """A sweep's outputs carry the same tokenizer.json: one parse serves them all; a changed file
    is parsed again."""
    import tokenizers

    from alloylm.models import saving

    parses = []
    real_parse = saving.token_id_from_json
    monkeypatch.setattr(saving, "_TOKEN_IDS", {})
    monkeypatch.setattr(saving, "token_id_from_json", lambda *a: parses.append(1) or real_parse(*a))
    token = json.loads((tiny_llama / "tokenizer_config.json").read_text())["eos_token"]
    token = token["content"] if isinstance(token, dict) else token
    expected = tokenizers.Tokenizer.from_file(str(tiny_llama / "tokenizer.json")).token_to_id(token)
    copies = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        copies.append(shutil.copy(tiny_llama / "tokenizer.json", tmp_path / name))
    assert [saving.token_id_in(Path(c), token) for c in copies] == [expected] * 3
    assert len(parses) == 1
    Path(copies[2]).write_text(Path(copies[2]).read_text() + "\n")
    assert saving.token_id_in(Path(copies[2]), token) == expected
    assert len(parses) == 2
