"""Files that ship inside the package: the third-party data the recipes read (`data/`).

One rule for the data root, used by the pipeline loader (``${data}``), task names in
`alloy eval`, `alloy distill run` and the tests: ``$ALLOY_DATA`` when set, else the packaged
folder. The packaged folder is found next to this file, so it works alike from a source checkout,
an editable install and a wheel.
"""

from __future__ import annotations

import os
from pathlib import Path

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
