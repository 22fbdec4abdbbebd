"""Artifacts are readable by the other users of the machine: files written through tempfile
(mode 0600, as safetensors does via transformers) are published with the usual modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from alloylm.atomic import atomic_directory, publish_permissions


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_directory_publishes_0600_files_as_0644(tmp_path: Path, umask_022) -> None:
    target = tmp_path / "artifact"
    with atomic_directory(target) as work:
        weights = work / "model.safetensors"
        weights.write_bytes(b"weights")
        os.chmod(weights, 0o600)  # what a tempfile-based writer leaves
        (work / "sub").mkdir(mode=0o700)
        (work / "sub" / "x.json").write_text("{}")
        os.chmod(work / "sub" / "x.json", 0o600)
    assert _mode(target / "model.safetensors") == 0o644
    assert _mode(target / "sub") == 0o755
    assert _mode(target / "sub" / "x.json") == 0o644
    assert _mode(target) == 0o755


def test_publish_keeps_executables_and_follows_the_umask(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    os.chmod(script, 0o700)
    data = tmp_path / "data.bin"
    data.write_bytes(b"x")
    os.chmod(data, 0o600)
    previous = os.umask(0o077)  # a user who wants private files keeps them private
    try:
        publish_permissions(data)
        assert _mode(data) == 0o600
    finally:
        os.umask(previous)
    os.umask(0o022)
    try:
        publish_permissions(tmp_path)
    finally:
        os.umask(previous)
    assert _mode(script) == 0o755 and _mode(data) == 0o644
