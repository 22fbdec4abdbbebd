"""Shared fixtures. Models are prepared once per cache: $ALLOY_HOME, else <repo>/.test-cache.

Tests never write to the user's ~/.cache: unless ALLOY_HOME is set, it points into the repository
(gitignored, kept between runs so that the embedded model is converted once).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"  # small excerpts and fixtures for data alloylm does not ship

os.environ.setdefault("ALLOY_HOME", str(REPO / ".test-cache"))


def _data_root() -> Path:
    from alloylm.resources import data_root

    return data_root()


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data root (${data}): the packaged third-party data, or $ALLOY_DATA."""
    return _data_root()


@pytest.fixture(scope="session")
def test_data() -> Path:
    """tests/data: excerpts of third-party files the package does not ship, each with SOURCE.md."""
    return TEST_DATA


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
