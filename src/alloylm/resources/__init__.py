"""Files that ship inside the package, found next to this file (a source checkout, an editable
install and a wheel alike; nothing is looked up in folders above the package):

- ``data/``: the third-party data the quickstart, the shipped recipes and the tests read. One rule
  for the data root, used by the pipeline loader (``${data}``), task names in `alloy eval`,
  `alloy distill run` and the tests: ``$ALLOY_DATA`` when set, else this folder.
- ``recipes/``: the repository's ``recipes/`` folder (a symlink in the source tree, real files in a
  wheel): `alloy init --recipe NAME` writes one out.
- ``accelerate/``: accelerate launcher configs (DDP, FSDP, DeepSpeed ZeRO-3, multi-node).
"""

from __future__ import annotations

import os
from pathlib import Path

from alloylm.errors import ConfigError, did_you_mean

DATA_ENV = "ALLOY_DATA"
# the YAML names of the data root: ${data}, and ${shared_data}, its older name
DATA_VARS = ("data", "shared_data")
PACKAGE_DIR = Path(__file__).resolve().parent


def packaged_data() -> Path:
    """The data folder that ships with alloylm (see its README.md and each SOURCE.md)."""
    return PACKAGE_DIR / "data"


def data_root() -> Path:
    """$ALLOY_DATA if set (a folder with the same layout), else the packaged data folder."""
    override = os.environ.get(DATA_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return packaged_data()


def recipes_dir() -> Path:
    return PACKAGE_DIR / "recipes"


def recipe_names() -> list[str]:
    """Shipped recipes by name: the path under recipes/ without .yaml (`paper/smollm_1.7b`)."""
    root = recipes_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def recipe_path(name: str) -> Path:
    """The shipped recipe called `name` (with or without .yaml); ConfigError listing the known ones."""
    stem = name.removesuffix(".yaml").removesuffix(".yml")
    known = recipe_names()
    if stem not in known:
        raise ConfigError(
            f"no shipped recipe {name!r}{did_you_mean(stem, known)}",
            key="--recipe",
            hint=f"shipped recipes: {', '.join(known)}",
        )
    return recipes_dir() / f"{stem}.yaml"


def accelerate_dir() -> Path:
    """The shipped accelerate configs (`--config-file ddp|fsdp|deepspeed_zero3|multinode`)."""
    return PACKAGE_DIR / "accelerate"
