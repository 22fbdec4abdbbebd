"""A fresh clone is enough, and so is a wheel: nothing reads ../shared or the source checkout.

- `git clone` of this repository's HEAD (committed files only) into an empty folder with no
  shared/ beside it: the quickstart validates and a tiny pipeline on `${data}` runs, with alloylm
  imported from the clone's src/.
- A wheel built from that clone, installed into a new virtual environment that sees the
  dependencies but neither the clone nor this checkout: `alloy --version`,
  `alloy init --recipe quickstart`, `alloy validate` and a tiny pipeline run from an unrelated
  folder.

The pipelines use `tiny:llama` (2 layers) for 2 CPT steps and 4 review questions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import alloylm

REPO = Path(__file__).resolve().parents[2]
RUN_ALLOY = "import sys; from alloylm.cli.main import main; sys.argv[0] = 'alloy'; sys.exit(main())"

TINY_PIPELINE = """\
run: {name: tiny, seed: 1, output: runs/tiny}
stages:
  cpt:
    kind: cpt
    model: tiny:llama
    data:
      - {path: "${data}/openstax_corpus/anatomy_physiology_2e.jsonl", limit: 4}
    train: {max_steps: 2, max_seq_length: 64, per_device_batch_size: 2, save_steps: 100}
  eval:
    kind: eval
    models: ["${stages.cpt.output}"]
    protocols: [cloze]
    tasks:
      - {path: "${data}/openstax_mcq/anatomy_physiology_2e_mcq.jsonl", type: mcq, name: ap2e, limit: 4}
"""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what could point back here (ALLOY_DATA, PYTHONPATH).

    ALLOY_HOME stays: conftest points it into the repository's .test-cache, so tiny:llama is
    built once and nothing is written to ~/.cache.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("ALLOY_DATA", "PYTHONPATH")}
    env.update(
        HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", NO_COLOR="1"
    )
    env.update(extra)
    return env


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


def check_tiny_run(folder: Path, alloy: list[str], env: dict[str, str], data_root: Path) -> None:
    (folder / "tiny.yaml").write_text(TINY_PIPELINE)
    run([*alloy, "run", "tiny.yaml"], folder, env)
    eval_dir = folder / "runs" / "tiny" / "eval"
    assert (eval_dir / "alloy.json").is_file()
    cpt_record = (folder / "runs" / "tiny" / "cpt" / "alloy.json").read_text()
    assert "shared/data" not in cpt_record
    # the corpus the stage read is the one that ships in this copy of the package: the manifest
    # names it location-free (${data}/...) with the sha256 of this copy's file
    corpus = data_root / "openstax_corpus" / "anatomy_physiology_2e.jsonl"
    data_hashes = json.loads(cpt_record)["data_hashes"]
    assert data_hashes["${data}/openstax_corpus/anatomy_physiology_2e.jsonl"] == (
        hashlib.sha256(corpus.read_bytes()).hexdigest()
    )


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout of the project")
    root = tmp_path_factory.mktemp("fresh")
    target = root / "alloylm"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True, timeout=120)
    assert [p.name for p in root.iterdir()] == ["alloylm"]  # no shared/ beside it
    return target


def test_fresh_clone_validates_the_quickstart_and_runs_a_tiny_pipeline(
    clone: Path, tmp_path: Path
) -> None:
    env = clean_env(PYTHONPATH=str(clone / "src"))
    python = [sys.executable, "-c"]
    where = run([*python, "import alloylm; print(alloylm.__file__)"], clone, env).stdout.strip()
    assert Path(where).is_relative_to(clone / "src")  # the clone's code, not this checkout's
    out = run([*python, RUN_ALLOY, "validate", "recipes/quickstart.yaml"], clone, env).stdout
    assert "cpt" in out and "eval" in out
    work = tmp_path / "work"
    work.mkdir()
    data_root = clone / "src" / "alloylm" / "resources" / "data"
    check_tiny_run(work, [*python, RUN_ALLOY], env, data_root)


@pytest.fixture(scope="module")
def wheel_venv(clone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel of the clone installed; dependencies come from this venv by a .pth
    line (its site-packages as a plain path: the .pth of the editable install there is not read)."""
    dist = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(clone)],
        check=True,
        timeout=300,
        env=clean_env(),
    )
    (wheel,) = dist.glob("alloylm-*.whl")
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
        env=clean_env(),
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]  # this venv's site-packages: torch, transformers, ...
    (Path(purelib) / "_alloylm_test_dependencies.pth").write_text(deps + "\n")
    return venv


def test_wheel_install_runs_from_an_unrelated_folder(
    wheel_venv: Path, clone: Path, tmp_path: Path
) -> None:
    env = clean_env()
    alloy = [str(wheel_venv / "bin" / "alloy")]
    python = str(wheel_venv / "bin" / "python")
    probe = (
        "import json, sys, alloylm; from alloylm.pipeline.launch import shipped_config;"
        "print(json.dumps([alloylm.__file__, sys.path, str(shipped_config('ddp'))]))"
    )
    where, path, ddp = json.loads(run([python, "-c", probe], tmp_path, env).stdout)
    package = Path(where).parent
    assert package.is_relative_to(wheel_venv)
    for entry in path:  # neither this checkout's nor the clone's src/ is importable
        assert not Path(entry or ".").resolve().is_relative_to(REPO / "src")
        assert not Path(entry or ".").resolve().is_relative_to(clone)
    assert Path(ddp).is_relative_to(package)

    version = run([*alloy, "--version"], tmp_path, env).stdout
    assert version.strip() == f"alloylm {alloylm.__version__}"
    run([*alloy, "init", "--recipe", "quickstart", "my.yaml"], tmp_path, env)
    assert "output: runs/quickstart" in (tmp_path / "my.yaml").read_text()
    out = run([*alloy, "validate", "my.yaml"], tmp_path, env).stdout
    assert "merged" in out
    unknown = subprocess.run(
        [*alloy, "init", "--recipe", "nope"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert unknown.returncode == 2 and "quickstart" in unknown.stderr
    assert not (tmp_path / "nope.yaml").exists()

    work = tmp_path / "work"
    work.mkdir()
    check_tiny_run(work, alloy, env, package / "resources" / "data")
