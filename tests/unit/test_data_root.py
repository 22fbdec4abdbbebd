"""The data root: one rule ($ALLOY_DATA, else the packaged data), the YAML names that reach it,
and the packaged files being the verbatim copies their SOURCE.md says they are."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import textwrap
from pathlib import Path

import pytest

from alloylm.evals.catalog import find_task_file
from alloylm.pipeline.load import load_pipeline
from alloylm.resources import data_root, packaged_data

# what the quickstart, the shipped recipes and the tests read (README.md of the data lists them)
SHIPPED = (
    "openstax_corpus/anatomy_physiology_2e.jsonl",
    "openstax_sft/anatomy_physiology_2e_glossary.jsonl",
    "openstax_sft/anatomy_physiology_2e_exercises_qa.jsonl",
    "openstax_mcq/anatomy_physiology_2e_mcq.jsonl",
    "mmlu_stem/college_biology_test.csv",
    "mmlu_stem/anatomy_test.csv",
    "openstax_extract/anatomy_physiology_2e_extract.jsonl",
)
SHA_LINE = re.compile(r"^`?([0-9a-f]{64})  (\S+?)`?$")


def test_default_root_is_the_packaged_data(monkeypatch):
    monkeypatch.delenv("ALLOY_DATA", raising=False)
    root = data_root()
    assert root == packaged_data()
    assert root.parts[-3:] == ("alloylm", "resources", "data")  # inside the package, not ../shared
    for name in SHIPPED:
        assert (root / name).is_file(), name


def test_alloy_data_overrides_the_root(monkeypatch, tmp_path):
    monkeypatch.setenv("ALLOY_DATA", str(tmp_path))
    assert data_root() == tmp_path.resolve()


@pytest.mark.parametrize("folder", sorted({name.split("/")[0] for name in SHIPPED}))
def test_each_folder_has_its_source_and_the_files_match_its_checksums(folder):
    base = packaged_data() / folder
    source = (base / "SOURCE.md").read_text()
    assert "License" in source or "license" in source
    sums = {
        match.group(2): match.group(1)
        for line in source.splitlines()
        if (match := SHA_LINE.match(line.strip()))
    }
    data_files = {p.name for p in base.iterdir() if p.name != "SOURCE.md"}
    assert set(sums) == data_files  # every shipped file is listed, nothing listed is missing
    for name, expected in sums.items():
        assert hashlib.sha256((base / name).read_bytes()).hexdigest() == expected, name


def test_data_and_its_alias_shared_data_resolve_to_the_root(monkeypatch, tmp_path):
    monkeypatch.setenv("ALLOY_DATA", str(tmp_path / "mydata"))
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            run: {name: t}
            stages:
              a:
                kind: eval
                models: [tiny:llama]
                tasks:
                  - {path: "${data}/openstax_mcq/x.jsonl", type: mcq}
                  - {path: "${shared_data}/mmlu_stem/y.csv", type: mcq}
            """
        )
    )
    tasks = load_pipeline(path, check_data=False).stages["a"].config.tasks
    assert [Path(t.path) for t in tasks] == [
        tmp_path / "mydata" / "openstax_mcq" / "x.jsonl",
        tmp_path / "mydata" / "mmlu_stem" / "y.csv",
    ]


def test_task_names_are_found_in_the_packaged_data_from_any_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("ALLOY_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # no shared/ or data/ near here
    assert find_task_file("anatomy_physiology_2e_mcq") == (
        packaged_data() / "openstax_mcq" / "anatomy_physiology_2e_mcq.jsonl"
    )
    assert find_task_file("mmlu_stem/college_biology_test") == (
        packaged_data() / "mmlu_stem" / "college_biology_test.csv"
    )


def test_package_data_patterns_cover_every_resource_file():
    # a file under resources/ that no pattern names would be missing from a wheel
    tomllib = pytest.importorskip("tomllib")
    repo = Path(__file__).resolve().parents[2]
    config = tomllib.loads((repo / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["alloylm"]
    package = repo / "src" / "alloylm"
    files = [
        p
        for p in (package / "resources").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert len(files) > 10
    for file in files:
        rel = file.relative_to(package).as_posix()
        assert any(
            fnmatch.fnmatch(file.name, pattern[3:])
            if pattern.startswith("**/")
            else fnmatch.fnmatch(rel, pattern)
            for pattern in patterns
        ), f"{rel} is not package data (pyproject [tool.setuptools.package-data])"
