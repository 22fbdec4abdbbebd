"""Shared fixtures. Models are prepared once per cache ($ALLOY_HOME, default ~/.cache/alloylm)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    if os.environ.get("ALLOY_DATA"):
        return Path(os.environ["ALLOY_DATA"])
    for base in (REPO, *REPO.parents):
        if (base / "shared" / "data").is_dir():
            return base / "shared" / "data"
    raise RuntimeError("shared data folder not found; set ALLOY_DATA")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (third-party corpus, SFT seeds, preference pairs, benchmarks)."""
    return _shared_data()


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    """Folder of a tiny random Llama (2 layers, hidden 64) with the embedded tokenizer."""
    from alloylm.models.sources import resolve_model

    return resolve_model("tiny:llama")


@pytest.fixture(scope="session")
def tiny_llama_other() -> Path:
    """A second tiny Llama with other random weights (same shapes): a merge partner."""
    from alloylm.models.sources import resolve_model

    return resolve_model("tiny:llama:1")


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    """The embedded SmolLM2-135M-Instruct as an HF folder (converted once, ~40 s)."""
    from alloylm.models.sources import resolve_model

    return resolve_model("embedded:smollm2-135m-instruct")


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
