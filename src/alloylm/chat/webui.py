"""The side-by-side chat page of `alloy serve MODEL... --ui`, and the votes it saves.

The page (package data in `chat/ui/`: HTML, JS and CSS, no CDN, nothing fetched from elsewhere)
holds one conversation with 2-4 served models in columns, each model keeping its own history.
It streams every answer through the server's own `POST /v1/chat/completions` (`stream: true`),
so what the page shows is exactly what an OpenAI client gets. With `--blind` the columns are
shuffled and labelled A, B, ... until a vote reveals the names. (Blind against a glance, not
against the browser's developer tools: the requests name the models.)

Routes, served by `chat/serve.py`'s handler when a page is attached (`server.ui`):

- `GET /` and `GET /ui` redirect to `/ui/`; `GET /ui/`, `/ui/app.js`, `/ui/style.css` are the
  static files, served without a key (they hold no secret) and with a strict
  Content-Security-Policy (scripts, styles and connections to this origin only);
- `GET /ui/config`: with the key (when one is set), the served names, blind or not, the presets;
  without it only `{"authorized": false}`;
- `POST /ui/votes` (key checked): one vote, appended to the votes file as pairwise records
  (`vote_records`). It must be `Content-Type: application/json`, and a request whose `Origin`
  is not this server's is refused, so another web site cannot post votes through the browser.

API keys: the page never contains the key. When the server has one, the page asks for it once
(or reads it from the address's fragment, `/ui/#key=KEY`, which browsers never send to a server)
and keeps it in the tab's sessionStorage; every request sends it as `Authorization: Bearer`.

Votes file: one JSON object a line, the format `chat/judge.py`'s `load_votes` reads:
{"a": model, "b": model, "winner": "a" | "b" | "tie" | "both_bad", "prompt", "time", ...}.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from alloylm.chat.ratings import OUTCOMES
from alloylm.chat.serve import ApiError, check_api_key

DEFAULT_VOTES_FILE = "alloy-votes.jsonl"  # in the folder `alloy serve` was started from
MAX_VOTE_BYTES = 4 * 1024 * 1024
MAX_MODELS = 4
SLOTS = "ABCD"
STATIC = {  # route -> (file in chat/ui, content type)
    "/ui/": ("index.html", "text/html; charset=utf-8"),
    "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/ui/style.css": ("style.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def vote_records(
    models: Sequence[str],
    winner: str,
    *,
    prompt: str,
    answers: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """The pairwise records of one vote on the columns `models` (slot order A, B, ...).

    `winner` is a slot letter ("A", "B", ...), "tie" or "both_bad". With two models that is one
    record, winner "a", "b", "tie" or "both_bad". With more, a best answer X gives one record per
    other model (X beat each of them; how the others compare is not known, so no record), a tie
    or "both bad" gives a record for every pair. `a` is always the earlier column.
    """
    if not 2 <= len(models) <= MAX_MODELS or len(set(models)) != len(models):
        raise ValueError(f"a vote compares 2 to {MAX_MODELS} different models")
    slots = SLOTS[: len(models)]
    if winner in ("tie", "both_bad"):
        best = None
    elif len(winner) == 1 and winner.upper() in slots:
        best = slots.index(winner.upper())
    else:
        raise ValueError(f"winner must be one of {', '.join(slots)}, tie or both_bad")
    answers = list(answers) if answers is not None else None
    if answers is not None and len(answers) != len(models):
        raise ValueError("give one answer per model")
    vote_id = uuid.uuid4().hex[:16]
    now = now or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    records = []
    for i in range(len(models)):
        for j in range(i + 1, len(models)):
            if best is None:
                outcome = winner
            elif best in (i, j):
                outcome = "a" if best == i else "b"
            else:
                continue
            record: dict[str, Any] = {
                "a": models[i],
                "b": models[j],
                "winner": outcome,
                "prompt": prompt,
                "time": now,
            }
            if answers is not None:
                record["answer_a"], record["answer_b"] = answers[i], answers[j]
            record.update(
                {"vote": vote_id, "columns": list(models), "choice": winner, **(extra or {})}
            )
            records.append(record)
    assert all(r["winner"] in OUTCOMES for r in records)
    return records


class SideBySidePage:
    """The page and its votes file for one server; `handle` is its hook in the HTTP handler."""

    def __init__(
        self,
        models: Sequence[str],
        *,
        blind: bool = False,
        votes_file: str | Path = DEFAULT_VOTES_FILE,
        max_tokens: int = 256,
    ) -> None:
        if not 2 <= len(models) <= MAX_MODELS:
            from alloylm.errors import ConfigError

            raise ConfigError(
                f"the side-by-side page shows 2 to {MAX_MODELS} models; {len(models)} given",
                key="--ui",
                hint="serve 2, 3 or 4 models with --ui",
            )
        self.models = list(models)
        self.blind = blind
        self.votes_file = Path(votes_file).expanduser().resolve()
        self.max_tokens = max_tokens
        self._lock = threading.Lock()
        self._files = {route: _read_static(name) for route, (name, _) in STATIC.items()}

    # -- the hook
    def handle(self, handler: Any, method: str) -> bool:
        """Answer `handler`'s request when it is one of the page's; False leaves it to the API."""
        path = handler.path.split("?", 1)[0]
        if method == "GET" and path in ("/", "/ui"):
            self._redirect(handler, "/ui/")
        elif method == "GET" and path in STATIC:
            self._static(handler, path)
        elif method == "GET" and path == "/ui/config":
            # Always a 200 (a 401 would be a console error in the browser): without the key
            # it says only that one is needed.
            if check_api_key(handler.headers.get("Authorization"), handler.server.api_key):
                _json(handler, 200, {"authorized": True, **self.config()})
            else:
                _json(handler, 200, {"authorized": False, "key_required": True})
        elif method == "POST" and path == "/ui/votes":
            self._vote(handler)
        elif path.startswith("/ui/"):
            _json(handler, 404, ApiError(404, f"no route {path}", code="not_found").body())
        else:
            return False
        return True

    def config(self) -> dict[str, Any]:
        from alloylm.generation.sampling import PRESETS

        presets = {
            name: {
                "temperature": p.temperature,
                "top_p": p.top_p,
                "top_k": p.top_k,
                "repetition_penalty": p.repetition_penalty,
                # greedy's length is the server's --max-tokens; study's is the study's 1024
                "max_tokens": self.max_tokens if name == "greedy" else p.max_new_tokens,
            }
            for name, p in PRESETS.items()
        }
        return {
            "models": self.models,
            "blind": self.blind,
            "presets": presets,
            "default_preset": "study" if "study" in presets else next(iter(presets)),
            "votes_file": self.votes_file.name,
        }

    # -- votes
    def _vote(self, handler: Any) -> None:
        origin = handler.headers.get("Origin")
        host = handler.headers.get("Host")
        # The page's own origin is http(s)://<Host> (https behind a TLS proxy); any other
        # origin is another web site posting through the user's browser.
        if origin is not None and urlsplit(origin).netloc != host:
            handler.close_connection = True
            return _json(handler, 403, _error(403, "votes come from this server's own page"))
        length = handler.headers.get("Content-Length")
        try:
            size = int(length or 0)
        except ValueError:
            size = -1
        if size < 0 or size > MAX_VOTE_BYTES or handler.headers.get("Transfer-Encoding"):
            handler.close_connection = True
            return _json(handler, 413, _error(413, "send a vote of at most 4 MB, with its length"))
        raw = handler.rfile.read(size)
        if not self._authorized(handler):
            return None
        kind = (handler.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            return _json(handler, 415, _error(415, "send the vote as application/json"))
        try:
            body = json.loads(raw)
            records = self.records_for(body)
        except (ValueError, UnicodeDecodeError) as error:
            return _json(handler, 400, _error(400, f"not a vote: {error}"))
        self.append(records)
        slots = dict(zip(SLOTS, body["models"], strict=False))
        _json(handler, 200, {"saved": len(records), "models": slots})

    def records_for(self, body: Any) -> list[dict[str, Any]]:
        """Check a posted vote (ValueError naming the field) and make its records."""
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        models = body.get("models")
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise ValueError("models must be the list of the columns' model names")
        unknown = [m for m in models if m not in self.models]
        if unknown:
            raise ValueError(f"models: {unknown[0]!r} is not served here")
        winner = body.get("winner")
        prompt = body.get("prompt")
        answers = body.get("answers")
        if not isinstance(winner, str):
            raise ValueError("winner must be a column letter, tie or both_bad")
        if not isinstance(prompt, str):
            raise ValueError("prompt must be the user's message")
        if answers is not None and (
            not isinstance(answers, list) or not all(isinstance(a, str) for a in answers)
        ):
            raise ValueError("answers must be a list of strings, one per column")
        extra: dict[str, Any] = {"blind": bool(body.get("blind")), "source": "alloy serve --ui"}
        for name, kinds in (
            ("session", (str,)),
            ("turn", (int,)),
            ("system", (str, type(None))),
            ("settings", (dict,)),
        ):
            if name in body:
                if not isinstance(body[name], kinds) or isinstance(body[name], bool):
                    raise ValueError(f"{name} has the wrong type")
                extra[name] = body[name]
        return vote_records(models, winner, prompt=prompt, answers=answers, extra=extra)

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Append whole lines and sync: a crash leaves every earlier vote readable."""
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with self._lock:
            self.votes_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.votes_file, "a", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())

    # -- responses
    def _authorized(self, handler: Any) -> bool:
        if check_api_key(handler.headers.get("Authorization"), handler.server.api_key):
            return True
        _json(handler, 401, _error(401, "missing or wrong API key", code="invalid_api_key"))
        return False

    def _static(self, handler: Any, route: str) -> None:
        data = self._files[route]
        handler.send_response(200)
        handler.send_header("Content-Type", STATIC[route][1])
        handler.send_header("Content-Length", str(len(data)))
        for name, value in SECURITY_HEADERS.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _redirect(handler: Any, location: str) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()


def _read_static(name: str) -> bytes:
    return resources.files("alloylm.chat").joinpath("ui").joinpath(name).read_bytes()


def _error(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    return ApiError(status, message, code=code).body()


def _json(handler: Any, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("Cache-Control", "no-store")
    handler.end_headers()
    handler.wfile.write(data)


__all__ = ["DEFAULT_VOTES_FILE", "SideBySidePage", "vote_records"]
