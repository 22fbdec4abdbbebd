"""The test suite keeps its model cache in the repository, never in the user's ~/.cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = (
    "import os, sys; sys.path.insert(0, 'tests'); import conftest; print(os.environ['ALLOY_HOME'])"
)


def alloy_home_seen_by_tests(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "ALLOY_HOME"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_without_alloy_home_the_tests_use_the_repository_cache():
    assert alloy_home_seen_by_tests() == str(REPO / ".test-cache")


def test_an_alloy_home_the_user_set_is_kept(tmp_path):
    assert alloy_home_seen_by_tests(ALLOY_HOME=str(tmp_path)) == str(tmp_path)
