"""`alloy init --recipe NAME`: the shipped recipes are package data, written out ready to run."""

from __future__ import annotations

from pathlib import Path

import pytest

from alloylm.cli.main import main
from alloylm.errors import ConfigError
from alloylm.pipeline.load import load_pipeline
from alloylm.resources import recipe_names, recipe_path, recipes_dir

REPO_RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_packaged_recipes_are_the_repository_recipes():
    # one copy: the package's recipes/ is the repository's folder, not a second set of files
    assert recipes_dir().resolve() == REPO_RECIPES.resolve()
    names = recipe_names()
    assert {"quickstart", "distill_local", "paper/smollm_1.7b"} <= set(names)
    assert recipe_path("quickstart.yaml") == recipes_dir() / "quickstart.yaml"


def test_unknown_recipe_names_the_known_ones():
    with pytest.raises(ConfigError) as error:
        recipe_path("quickstrat")
    text = str(error.value)
    assert "did you mean 'quickstart'" in text
    for name in recipe_names():
        assert name in text


def test_init_recipe_writes_quickstart_with_its_output_beside_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--recipe", "quickstart", "my.yaml"]) == 0
    written = (tmp_path / "my.yaml").read_text()
    # recipes/quickstart.yaml says ../runs/quickstart (the repository's runs/); here: ./runs
    assert "  output: runs/quickstart\n" in written
    original = (REPO_RECIPES / "quickstart.yaml").read_text().splitlines()
    changed = [(a, b) for a, b in zip(original, written.splitlines(), strict=True) if a != b]
    assert changed == [("  output: ../runs/quickstart", "  output: runs/quickstart")]
    pipeline = load_pipeline(tmp_path / "my.yaml")  # data files found: they ship with alloylm
    assert pipeline.output_dir == (tmp_path / "runs" / "quickstart").resolve()
    assert main(["init", "--recipe", "quickstart", "my.yaml"]) == 2  # refuses to overwrite


def test_init_recipe_flow_mapping_output_and_default_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--recipe", "distill_local"]) == 0
    written = (tmp_path / "distill_local.yaml").read_text()
    assert "run: {name: distill_local, seed: 42, output: runs/distill_local}" in written


def test_init_recipe_without_output_is_written_verbatim(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--recipe", "paper/smollm_1.7b", "s.yaml"]) == 0
    source = recipe_path("paper/smollm_1.7b").read_text()
    assert (tmp_path / "s.yaml").read_text() == source


def test_init_unknown_recipe_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--recipe", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no shipped recipe 'nope'" in err and "quickstart" in err
    assert not list(tmp_path.iterdir())
