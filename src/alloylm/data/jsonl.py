"""Reading JSON Lines with line numbers: the one loop every reader of a JSONL file shares.

Two policies, one wording. Strict (the default): the first bad line is a DataError naming the file
and the line. Lenient (`on_error`): a bad line is handed to `on_error(line, problem)`, which counts
and locates it, and reading goes on.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from alloylm.errors import DataError


def iter_jsonl(
    path: str | Path,
    *,
    objects: bool = False,
    on_error: Callable[[int, str], None] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed value) for each non-blank line. `.gz` files are read through
    gzip. A line that is not JSON, or (with `objects`) not a JSON object, is bad: see above."""
    from alloylm.errors import READ_ERRORS, unreadable_file

    path = Path(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                problem = None
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as error:
                    problem = f"invalid JSON: {error.msg} (column {error.colno})"
                else:
                    if objects and not isinstance(value, dict):
                        problem = f"expected a JSON object, got {type(value).__name__}"
                if problem is None:
                    yield line_number, value
                elif on_error is not None:
                    on_error(line_number, problem)
                else:
                    raise DataError(
                        problem,
                        file=str(path),
                        line=line_number,
                        hint="fix that line (one JSON object per line)",
                    )
    except READ_ERRORS as error:
        raise unreadable_file(path, error) from None
