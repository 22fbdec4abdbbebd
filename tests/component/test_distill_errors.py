"""Error paths against a real loopback HTTP server that answers 429, 500, slow and malformed in turn.

The run must finish with every unit either done or counted as failed (nothing lost), resume
an interrupted run without repeating finished calls, stop cleanly at the token budget, and
never write the API key anywhere.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alloylm.distill.engine import run_distill
from alloylm.distill.teachers import OpenAITeacher
from alloylm.stages.distill import Config

GOOD_ANSWER = (
    "Q: What does the text describe?\nA: It describes section {n} of the corpus in detail."
)


class FakeTeacherServer:
    """Answers chat completions following `modes` in turn: ok, 429, 500, slow, malformed, badjson."""

    def __init__(self, modes: list[str], slow_s: float = 0.5, per_prompt: bool = False) -> None:
        # per_prompt: the k-th request for the same prompt gets modes[k] (deterministic under concurrency);
        # otherwise requests take the modes in turn as they arrive.
        self.cycle = itertools.cycle(modes)
        self.modes, self.per_prompt, self.seen = modes, per_prompt, Counter()
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.auth_headers: list[str | None] = []
        self.slow_s = slow_s
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    prompt = json.dumps(body["messages"])
                    if outer.per_prompt:
                        mode = outer.modes[min(outer.seen[prompt], len(outer.modes) - 1)]
                    else:
                        mode = next(outer.cycle)
                    outer.seen[prompt] += 1
                    outer.requests.append(body)
                    outer.auth_headers.append(self.headers.get("Authorization"))
                    n = len(outer.requests)
                if mode == "slow":
                    time.sleep(outer.slow_s)
                if mode in ("429", "500"):
                    payload = b'{"error": {"message": "try later"}}'
                    self.send_response(int(mode))
                    if mode == "429":
                        self.send_header("Retry-After", "0")
                elif mode == "malformed":
                    payload = b"<html>gateway hiccup</html>"
                    self.send_response(200)
                else:
                    text = "not json at all" if mode == "badjson" else GOOD_ANSWER.format(n=n)
                    payload = json.dumps(
                        {
                            "choices": [{"message": {"role": "assistant", "content": text}}],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
                        }
                    ).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(
                    BrokenPipeError, ConnectionResetError
                ):  # the client timed out first
                    self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    rows = [
        {
            "id": f"doc{i}",
            "title": f"Doc {i}",
            "text": f"## Part {i}\n" + " ".join(f"w{i}x{j}" for j in range(40)),
        }
        for i in range(6)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _config(corpus: Path, base_url: str, **teacher: object) -> Config:
    settings = {
        "type": "openai",
        "base_url": base_url,
        "model": "fake",
        "timeout_s": 0.2,
        "backoff_s": 0.0,
        "max_tokens": 8,
        **teacher,
    }
    return Config(
        kind="distill",
        paths=[str(corpus)],
        raw_text=False,
        generators=["qa"],
        parse_retries=0,
        teacher=settings,
    )


@pytest.fixture
def server() -> Iterator[FakeTeacherServer]:
    """Modes in turn as requests arrive: with concurrency 1, unit k sees modes[k % 5]."""
    fake = FakeTeacherServer(["ok", "429", "500", "slow", "malformed"])
    yield fake
    fake.close()


def test_errors_are_retried_and_every_unit_ends_done(corpus: Path, tmp_path: Path) -> None:
    fake = FakeTeacherServer(["429", "500", "slow", "malformed", "ok"], per_prompt=True)
    try:
        cfg = _config(corpus, fake.base_url, concurrency=4, max_retries=4)
        stats = run_distill(cfg, tmp_path / "out", tmp_path / "state", log=lambda m: None).stats
    finally:
        fake.close()
    assert stats["units"] == {"qa": {"done": 6}}
    assert stats["retries"] == {"http_429": 6, "http_500": 6, "timeout": 6, "malformed_response": 6}
    assert len(fake.requests) == 30
    lines = (tmp_path / "out" / "sft.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["source"]["chunk"] for line in lines) == [
        f"doc{i}#0" for i in range(6)
    ]


def test_without_retries_failures_are_counted_never_lost(
    server: FakeTeacherServer, corpus: Path, tmp_path: Path
) -> None:
    cfg = _config(corpus, server.base_url, concurrency=1, max_retries=0)
    stats = run_distill(cfg, tmp_path / "out", tmp_path / "state", log=lambda m: None).stats
    units = stats["units"]["qa"]
    assert units.get("done", 0) + units.get("failed", 0) == 6
    assert units["done"] == 2 and units["failed"] == 4  # modes cycle ok,429,500,slow,malformed,ok
    assert stats["rejects"] == {
        "qa:teacher_http_429": 1,
        "qa:teacher_http_500": 1,
        "qa:teacher_timeout": 1,
        "qa:teacher_malformed_response": 1,
    }
    assert stats["records_per_kind"] == {"chat": 2}
    # A rerun asks again only for the four that failed; the two done are cached.
    again = run_distill(cfg, tmp_path / "out2", tmp_path / "state", log=lambda m: None).stats
    assert again["teacher"]["cache_hits"] == 2 and again["teacher"]["calls_made"] == 4


def test_invalid_json_is_retried_then_counted_and_skipped(corpus: Path, tmp_path: Path) -> None:
    fake = FakeTeacherServer(["badjson"])
    try:
        cfg = Config(
            kind="distill",
            paths=[str(corpus)],
            raw_text=False,
            generators=["structured"],
            parse_retries=2,
            max_documents=2,
            teacher={"type": "openai", "base_url": fake.base_url, "model": "fake", "max_tokens": 8},
        )
        stats = run_distill(cfg, tmp_path / "out", tmp_path / "state", log=lambda m: None).stats
        assert stats["units"] == {"structured": {"failed": 2}}
        assert stats["rejects"] == {"structured:invalid_json": 2}
        assert len(fake.requests) == 6  # 1 try + 2 retries per document
        assert {r["temperature"] for r in fake.requests} == {
            0.0,
            0.7,
        }  # retries sample instead of replaying greedy
        assert stats["outputs"] == {}
    finally:
        fake.close()


class _InterruptAfter:
    """Wraps a teacher; raises KeyboardInterrupt (as Ctrl-C would) on call number `n`."""

    def __init__(self, teacher: OpenAITeacher, n: int) -> None:
        self.teacher, self.n, self.calls = teacher, n, 0
        self.identity = teacher.identity

    def complete(self, *args: object, **kwargs: object):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.teacher.complete(*args, **kwargs)


def test_interrupted_run_resumes_without_repeating_finished_calls(
    corpus: Path, tmp_path: Path
) -> None:
    fake = FakeTeacherServer(["ok"])
    try:
        cfg = _config(corpus, fake.base_url, concurrency=1)
        teacher = _InterruptAfter(OpenAITeacher(fake.base_url, "fake"), n=4)
        with pytest.raises(KeyboardInterrupt):
            run_distill(
                cfg, tmp_path / "out", tmp_path / "state", teacher=teacher, log=lambda m: None
            )
        finished = len(fake.requests)
        assert (
            3 <= finished < 6 and not (tmp_path / "out" / "sft.jsonl").exists()
        )  # stopped, nothing half-written
        resumed = run_distill(cfg, tmp_path / "out", tmp_path / "state", log=lambda m: None).stats
        assert (
            resumed["teacher"]["cache_hits"] == finished
            and resumed["teacher"]["calls_made"] == 6 - finished
        )
        assert len(fake.requests) == 6 and resumed["units"] == {"qa": {"done": 6}}
        unchanged = run_distill(cfg, tmp_path / "out", tmp_path / "state", log=lambda m: None).stats
        assert unchanged["teacher"]["calls_made"] == 0 and len(fake.requests) == 6
    finally:
        fake.close()


def test_token_budget_stops_cleanly_and_a_larger_budget_continues(
    corpus: Path, tmp_path: Path
) -> None:
    fake = FakeTeacherServer(["ok"])
    try:
        cfg = _config(corpus, fake.base_url, concurrency=1).model_copy(update={"token_budget": 30})
        stats = run_distill(cfg, tmp_path / "out", tmp_path / "state", log=lambda m: None).stats
        assert stats["status"] == "budget_exhausted"
        assert stats["units"]["qa"] == {
            "done": 2,
            "failed": 4,
        }  # 15 tokens per call: the third call is refused
        assert stats["rejects"] == {"qa:budget": 4} and len(fake.requests) == 2
        assert len((tmp_path / "out" / "sft.jsonl").read_text().splitlines()) == 2
        more = run_distill(
            cfg.model_copy(update={"token_budget": None}),
            tmp_path / "out",
            tmp_path / "state",
            log=lambda m: None,
        ).stats
        assert more["units"]["qa"] == {"done": 6} and more["teacher"]["calls_made"] == 4
    finally:
        fake.close()


def test_api_key_is_sent_but_never_written(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-7f3a9c-never-write-me"
    monkeypatch.setenv("ALLOY_FAKE_KEY", secret)
    fake = FakeTeacherServer(["ok"])
    try:
        cfg = _config(corpus, fake.base_url, api_key_env="ALLOY_FAKE_KEY")
        logged: list[str] = []
        run_distill(cfg, tmp_path / "out", tmp_path / "state", log=logged.append)
        assert set(fake.auth_headers) == {f"Bearer {secret}"}
        for path in [*tmp_path.rglob("*")]:
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
        assert not any(secret in line for line in logged)
    finally:
        fake.close()


def _count_cached(state: Path) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(state / "distill-cache.sqlite")) as db:
        return db.execute("select count(*) from calls").fetchone()[0]


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("500", "answered HTTP 500: try later"),
        ("malformed", "not an OpenAI chat.completion (not JSON): '<html>gateway hiccup</html>'"),
        ("slow", "within 0.2 s (raise teacher.timeout_s"),
        ("refused", "connection refused at http://127.0.0.1:"),
        ("wrong_url", "answered HTTP 404"),
    ],
)
def test_a_teacher_that_never_answers_is_named_and_the_cache_is_kept(
    corpus: Path, tmp_path: Path, mode: str, says: str
) -> None:
    """Two documents answered and cached; then the teacher breaks and a run of all six stops
    with an error naming the teacher and what happened; the two answers stay cached and are
    reused by the next run against a working teacher."""
    from alloylm.distill.teachers import TeacherUnavailable
    from alloylm.errors import AlloyError

    server = FakeTeacherServer(["ok"])
    state = tmp_path / "state"
    wrong = _WrongPath() if mode == "wrong_url" else None
    try:
        first = _config(corpus, server.base_url).model_copy(update={"max_documents": 2})
        stats = run_distill(first, tmp_path / "a", state, log=lambda m: None).stats
        assert stats["teacher"]["calls_made"] == 2 and _count_cached(state) == 2
        base_url = server.base_url
        if mode == "refused":
            server.close()  # nothing listens there any more
        elif wrong is not None:
            base_url = wrong.base_url
        else:
            server.cycle = itertools.cycle([mode])
        cfg = _config(corpus, base_url, max_retries=1)
        logs: list[str] = []
        with pytest.raises(TeacherUnavailable) as caught:  # the 4 new documents all fail
            run_distill(
                cfg.model_copy(update={"paths": [str(_four_new(corpus, tmp_path))]}),
                tmp_path / "b",
                state,
                log=logs.append,
            )
        text = caught.value.render()
        assert isinstance(caught.value, AlloyError)
        assert f"teacher openai:{base_url}|fake" in text and says in text, text
        assert "kept" in text and _count_cached(state) == 2
        if wrong is None:  # all six: the two cached answers, a warning naming the failure
            again = run_distill(cfg, tmp_path / "c", state, log=logs.append).stats
            assert again["teacher"]["cache_hits"] == 2 and again["units"]["qa"]["done"] == 2
            assert any("warning: some calls failed" in line and says in line for line in logs)
    finally:
        if mode != "refused":
            server.close()
        if wrong is not None:
            wrong.close()


def _four_new(corpus: Path, tmp_path: Path) -> Path:
    lines = corpus.read_text().splitlines()[2:]
    path = tmp_path / "new.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


class _WrongPath:
    """A server whose every path is unknown (a base_url without /v1 on a real server)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                payload = b'{"detail": "Not Found"}'
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
