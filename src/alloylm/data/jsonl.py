"""Reading JSON Lines with line numbers: the one loop every strict reader shares."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alloylm.errors import DataError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed value) for each non-blank line; invalid JSON is a DataError
    naming the file and line. `.gz` files are read through gzip."""
    from alloylm.errors import READ_ERRORS, unreadable_file

    path = Path(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(
                        f"invalid JSON: {error.msg}",
                        file=str(path),
                        line=line_number,
                        hint="fix that line (one JSON object per line)",
                    ) from None
                yield line_number, value
    except READ_ERRORS as error:
        raise unreadable_file(path, error) from None
