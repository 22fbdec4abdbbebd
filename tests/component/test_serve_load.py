"""`alloy serve` under load (issue 14, item 5): a real `alloy serve tiny:llama` process on
loopback, many keep-alive clients in bounded loops, a small bounded queue, and the distillation
client (the OpenAI-compatible teacher through the distill engine) running at the same time.

Checked:
- no request is lost (every request gets an HTTP answer, none times out) or answered twice (each
  reply matches the one request it answers: its prompt tokens are that request's, its completion
  tokens fit that request's max_tokens, and no completion id appears in two replies; a second
  answer on a keep-alive connection would be read as the next request's reply and fail this);
- beyond the queue the answer is 503 `overloaded` with Retry-After, fast, never a hang;
- the server's RSS (from /proc) stays flat after warm-up (slow tier; bound below);
- the distill run finishes with every unit done or failed with a counted reason.

The fast tier runs 8 clients for a few seconds; the slow tier 32 clients for 60 seconds.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# Memory bound (slow tier): after a 15 s warm-up, the RSS may grow by at most 50 MB over the
# remaining 45 s. Why 50 MB: the server holds ~0.45 GB (torch, transformers, a tiny model), and
# the allocator's high-water marks (glibc's per-thread arenas) move RSS by tens of MB without a
# leak: one run here rose 38 MB during the warm-up, then 5.7 MB in the 45 s after it. The server
# answers thousands of requests in those 45 s (about 3,000 in that run), so a leak of 16 KB or
# more per request fails the test; a request's KV cache alone is ~25 KB here (512 bytes a
# token). Smaller per-request leaks are below what this bound can see.
WARMUP_S = 15.0
RSS_GROWTH_LIMIT_MB = 50.0


def _load_driver() -> Any:
    spec = importlib.util.spec_from_file_location(
        "serve_load", REPO / "benchmarks" / "serve_load.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = module
    spec.loader.exec_module(module)
    return module


driver = _load_driver()


def expected_prompt_tokens(tokenizer: Any, request_id: str, pad: int) -> int:
    """What the server's encode_chat gives for the request's messages (same template rule)."""
    from alloylm.data.chat_template import format_prompt

    text = format_prompt(tokenizer, driver.request_messages(request_id, pad))
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def check_outcomes(outcomes: list[Any], tokenizer: Any) -> Counter:
    """Every request answered exactly once, each reply its own request's; returns status counts."""
    ids = [o.request_id for o in outcomes]
    assert len(ids) == len(set(ids))
    lost = [(o.request_id, o.problem) for o in outcomes if o.status is None or o.problem]
    assert not lost, f"{len(lost)} requests lost or garbled, e.g. {lost[:3]}"
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) <= {200, 503}, statuses
    busy = [o for o in outcomes if o.status == 503]
    assert all(o.retry_after == "1" and o.error_code == "overloaded" for o in busy)
    # a refusal is immediate, not a wait in disguise
    assert max((o.latency_s for o in busy), default=0.0) < 10.0
    answered = [o for o in outcomes if o.status == 200]
    completion_ids = [o.completion_ids[0] for o in answered]
    assert len(completion_ids) == len(set(completion_ids)), "one completion id in two replies"
    prompt_tokens = {}
    for o in answered:
        assert set(o.completion_ids) == {o.completion_ids[0]}, "a stream mixes two completions"
        key = (o.request_id, o.pad)
        if key not in prompt_tokens:
            prompt_tokens[key] = expected_prompt_tokens(tokenizer, o.request_id, o.pad)
        assert o.prompt_tokens == prompt_tokens[key], f"{o.request_id} got another prompt's reply"
        assert o.finish_reason in ("stop", "length"), o
        assert 0 <= o.completion_tokens <= o.max_tokens, o
        if o.finish_reason == "length":
            assert o.completion_tokens == o.max_tokens, o
        assert isinstance(o.content, str)
    assert any(o.stream for o in answered) and any(not o.stream for o in answered)
    return statuses


def check_still_serving(server: Any) -> None:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
    connection.request("GET", "/health")
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}
    body = {"messages": [{"role": "user", "content": "after the load"}], "max_tokens": 2}
    connection.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["usage"]["completion_tokens"]
    connection.close()


def distill_config(data_root: Path, url: str, chunks: int, generators: list[str]) -> Any:
    from alloylm.distill.config import DistillConfig

    return DistillConfig(
        paths=[str(data_root / "openstax_corpus" / "anatomy_physiology_2e.jsonl")],
        max_documents=1,
        max_chunks=chunks,
        raw_text=False,
        chunking={"max_tokens": 64, "overlap": 8},
        teacher={
            "type": "openai",
            "base_url": url,
            "model": "m",
            "max_tokens": 8,
            "concurrency": 4,
            "temperature": 1.0,
            "max_retries": 5,
            "timeout_s": 60,
        },
        generators=generators,
        parse_retries=0,
    )


class DistillThread(threading.Thread):
    def __init__(self, cfg: Any, folder: Path) -> None:
        super().__init__(name="distill", daemon=True)
        self.cfg, self.folder = cfg, folder
        self.stats: dict | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        from alloylm.distill.engine import run_distill

        try:
            result = run_distill(
                self.cfg, self.folder / "out", self.folder / "state", log=lambda message: None
            )
            self.stats = result.stats
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error


def check_distill(thread: DistillThread, generators: list[str]) -> None:
    thread.join(timeout=300)
    assert not thread.is_alive(), "the distill run did not finish"
    assert thread.error is None, repr(thread.error)
    stats = thread.stats
    assert stats is not None and stats["chunks"] >= 1
    for generator in generators:
        units = stats["units"][generator]
        assert set(units) <= {"done", "failed"}
        assert sum(units.values()) == stats["chunks"], (generator, units)  # every chunk accounted
        reasons = sum(n for key, n in stats["rejects"].items() if key.startswith(f"{generator}:"))
        assert reasons == units.get("failed", 0), stats["rejects"]  # each failure has its reason


def run_load(
    tmp_path: Path,
    data_root: Path,
    tiny_llama: Path,
    *,
    clients: int,
    seconds: float,
    max_batch: int,
    max_queue: int,
    chunks: int,
    generators: list[str],
) -> tuple[list[Any], list[tuple[float, int]], DistillThread]:
    from alloylm.models.loading import load_tokenizer

    server = driver.ServeProcess(
        "tiny:llama", max_batch=max_batch, max_queue=max_queue, max_tokens=8, threads=1
    )
    try:
        sampler = driver.RssSampler(server.pid, interval_s=1.0)
        distill = DistillThread(
            distill_config(data_root, server.url, chunks, generators), tmp_path / "distill"
        )
        distill.start()
        outcomes = driver.drive(
            server.host,
            server.port,
            clients=clients,
            seconds=seconds,
            max_requests_per_client=5000,
            request_timeout_s=60.0,
        )
        check_distill(distill, generators)
        check_still_serving(server)
        samples = sampler.stop()
    finally:
        code = server.stop()
    assert code == 0, server.stderr_text()[-2000:]  # Ctrl-C under load: a clean shutdown
    check_outcomes(outcomes, load_tokenizer(tiny_llama))
    return outcomes, samples, distill


def test_many_clients_connecting_at_once_are_all_accepted() -> None:
    """128 connections at once: every one is answered (a listen backlog of 5 stalled or reset
    dozens of them: their handshakes were dropped while the accept queue was full)."""
    from alloylm.chat.serve import AlloyServer

    server = AlloyServer(("127.0.0.1", 0), {}, api_key=None, default_max_tokens=8)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    clients = 128
    barrier = threading.Barrier(clients)
    failures: list[str] = []

    def health() -> None:
        barrier.wait()
        try:
            connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
            connection.request("GET", "/health")
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                failures.append(f"status {response.status}")
            connection.close()
        except OSError as error:
            failures.append(repr(error))

    threads = [threading.Thread(target=health) for _ in range(clients)]
    try:
        for client in threads:
            client.start()
        for client in threads:
            client.join(timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert not failures, f"{len(failures)} of {clients} connections failed: {failures[:3]}"


def test_eight_clients_a_few_seconds(tmp_path: Path, data_root: Path, tiny_llama: Path) -> None:
    outcomes, samples, _ = run_load(
        tmp_path,
        data_root,
        tiny_llama,
        clients=8,
        seconds=4.0,
        max_batch=2,
        max_queue=2,
        chunks=2,
        generators=["summary"],
    )
    statuses = Counter(o.status for o in outcomes)
    # 8 clients, 2 running + 2 waiting: some are refused, and the others answered
    assert statuses[200] >= 8 and statuses[503] >= 1, statuses
    assert samples and all(rss > 0 for _, rss in samples)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_thirty_two_clients_for_a_minute(tmp_path: Path, data_root: Path, tiny_llama: Path) -> None:
    seconds = 60.0
    outcomes, samples, distill = run_load(
        tmp_path,
        data_root,
        tiny_llama,
        clients=32,
        seconds=seconds,
        max_batch=4,
        max_queue=4,
        chunks=4,
        generators=["summary", "qa"],
    )
    statuses = Counter(o.status for o in outcomes)
    assert statuses[200] >= 100 and statuses[503] >= 32, statuses
    # every client was served now and then: the queue does not starve anyone
    served_clients = {o.client for o in outcomes if o.status == 200}
    assert served_clients == set(range(32))
    summary = driver.summarise(outcomes, seconds, samples, WARMUP_S)
    print(json.dumps(summary))  # in the log with -s / -rP: what the run saw, not a benchmark
    assert summary["rss_samples"] >= 40
    growth = summary["rss_growth_after_warmup_mb"]
    assert growth is not None and growth < RSS_GROWTH_LIMIT_MB, summary
