"""SQLite cache of teacher calls and a log of run outcomes (for resume and `alloy distill stats`).

Every call is keyed by sha256(teacher identity, prompt template version, input hash), where the
input hash covers the rendered messages and the generation settings. A finished call is
committed before its result is used, so a run killed at any point resumes without repeating it,
and a rerun with nothing changed makes zero calls.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from alloylm.hashing import hash_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY, teacher TEXT NOT NULL, template TEXT NOT NULL, input_hash TEXT NOT NULL,
    response TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, finished REAL, status TEXT NOT NULL, stats TEXT
);
"""


def call_key(teacher: str, template_version: str, input_hash: str) -> str:
    return hash_json([teacher, template_version, input_hash])


class CallCache:
    """Thread-safe; one connection, WAL journal so a killed process leaves a consistent file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def get(self, key: str) -> tuple[str, int, int] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT response, prompt_tokens, completion_tokens FROM calls WHERE key = ?", (key,)
            ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def put(
        self,
        key: str,
        *,
        teacher: str,
        template: str,
        input_hash: str,
        response: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    teacher,
                    template,
                    input_hash,
                    response,
                    prompt_tokens,
                    completion_tokens,
                    time.time(),
                ),
            )

    def start_run(self) -> int:
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO runs (started, status) VALUES (?, 'running')", (time.time(),)
            )
            return int(cursor.lastrowid)

    def finish_run(self, run_id: int, status: str, stats: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE runs SET finished = ?, status = ?, stats = ? WHERE run_id = ?",
                (time.time(), status, json.dumps(stats), run_id),
            )

    def runs(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, started, finished, status, stats FROM runs ORDER BY run_id"
            ).fetchall()
        return [
            {
                "run_id": r[0],
                "started": r[1],
                "finished": r[2],
                "status": r[3],
                "stats": json.loads(r[4]) if r[4] else None,
            }
            for r in rows
        ]

    def totals(self) -> dict[str, int]:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(prompt_tokens),0), COALESCE(SUM(completion_tokens),0) FROM calls"
            ).fetchone()
        return {"cached_calls": row[0], "prompt_tokens": row[1], "completion_tokens": row[2]}

    def close(self) -> None:
        with self._lock:
            self._db.close()
