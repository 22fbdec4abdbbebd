"""Where alloylm caches prepared models: $ALLOY_HOME, default ~/.cache/alloylm."""

from __future__ import annotations

import os
from pathlib import Path


def alloy_home() -> Path:
    return Path(os.environ.get("ALLOY_HOME", Path.home() / ".cache" / "alloylm")).expanduser()


def models_cache() -> Path:
    return alloy_home() / "models"
