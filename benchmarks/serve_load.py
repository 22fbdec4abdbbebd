"""`alloy serve` under load: many concurrent clients against a real `alloy serve` process on
loopback, with a small bounded queue. Reports requests/s, p50/p99 latency, how many requests were
refused with 503 (and that each carried Retry-After), and the server's resident memory (RSS from
/proc) over the run.

    python benchmarks/serve_load.py [--model tiny:llama] [--clients 32] [--seconds 60]
    python benchmarks/serve_load.py --check     # 8 clients for 3 s, a 2+2 queue: the script works; no file

Prints a table and writes benchmarks/results/serve_load.json (not with --check). Run it on an
idle machine: the load average is recorded with the numbers, and numbers from a loaded machine
must not be published.

The driver (`ServeProcess`, `drive`, `RssSampler`, `summarise`) is also what
tests/component/test_serve_load.py runs; the test makes the assertions (no request lost or
answered twice, 503 + Retry-After beyond the queue, memory flat, the distill client finishes).

Every request carries a unique id (`user` field and prompt) and asks for a prompt length and a
`max_tokens` derived from that id, so a reply can be matched to the one request it answers:
its usage must show that request's prompt tokens and no more than its max_tokens.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_force_argument, begin, results_dir, run_record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAD_WORDS = 61  # prompt lengths cycle through 61 values ...
MAX_TOKENS_CYCLE = 7  # ... and max_tokens through 7 (coprime): 427 distinct (length, max) pairs


# ---------------------------------------------------------------- the server process
def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class ServeProcess:
    """`alloy serve MODEL --port 0 ...` as a child process; `url` once it listens."""

    def __init__(
        self,
        model: str,
        *,
        max_batch: int,
        max_queue: int,
        max_tokens: int,
        threads: int = 1,
        name: str = "m",
        startup_timeout_s: float = 180.0,
    ) -> None:
        env = dict(os.environ)
        env.update({"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"})
        env["PYTHONUNBUFFERED"] = "1"
        command = [
            sys.executable, "-m", "alloylm.cli.main", "serve", model, "--name", name,
            "--port", "0", "--max-batch", str(max_batch), "--max-queue", str(max_queue),
            "--max-tokens", str(max_tokens), "--threads", str(threads),
        ]  # fmt: skip
        self.name = name
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            # a shell that starts this in the background ignores SIGINT, and the child would
            # inherit that: stop() sends SIGINT (Ctrl-C) and expects a clean shutdown
            preexec_fn=_default_sigint,
        )
        self.pid = self.process.pid
        self.url = self._wait_for_url(startup_timeout_s)
        host, port = re.match(r"http://([^:/]+):(\d+)/v1", self.url).groups()  # type: ignore[union-attr]
        self.host, self.port = host, int(port)

    def _wait_for_url(self, timeout_s: float) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        seen = []
        while time.monotonic() < deadline:
            if not selector.select(timeout=1.0):
                if self.process.poll() is not None:
                    break
                continue
            line = self.process.stdout.readline()
            if not line:
                break
            seen.append(line)
            found = re.search(r"at (http://\S+/v1)", line)
            if found:
                return found.group(1)
        self.stop()
        raise RuntimeError(f"alloy serve did not start: {''.join(seen)}{self.stderr_text()}")

    def stderr_text(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read()

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Ctrl-C (the server shuts down cleanly), then kill if it does not end."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        return self.process.returncode


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/PID/status (VmRSS, in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class RssSampler:
    """Samples a process's RSS every `interval_s` in a thread: [(seconds since start, bytes)]."""

    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic() - self._started, rss_bytes(self.pid)))
            except (OSError, RuntimeError):
                return  # the process ended
            self._stop.wait(self.interval_s)

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.samples


# ---------------------------------------------------------------- the clients
def request_id(client: int, number: int) -> str:
    return f"c{client:02d}-r{number:05d}"


def request_shape(serial: int) -> tuple[int, int]:
    """(pad words, max_tokens) for the serial-th request: what its reply must show."""
    return serial % PAD_WORDS, 1 + serial % MAX_TOKENS_CYCLE


def request_messages(rid: str, pad: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Request {rid}. What is bone?" + " bone" * pad}]


@dataclass
class Outcome:
    """One request and what came back (status None: no HTTP answer at all, the request was lost)."""

    request_id: str
    client: int
    pad: int
    max_tokens: int
    stream: bool
    sent_s: float  # since the load started
    latency_s: float
    status: int | None
    retry_after: str | None = None
    error_code: str | None = None
    completion_ids: list[str] = field(
        default_factory=list
    )  # every id in the reply (stream: per chunk)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    content: str | None = None
    problem: str | None = None  # transport error or unparsable reply


def _parse_reply(outcome: Outcome, raw: bytes) -> None:
    if outcome.status != 200:
        try:
            outcome.error_code = json.loads(raw)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            outcome.problem = f"error body not in OpenAI's shape: {raw[:200]!r}"
        return
    try:
        if not outcome.stream:
            body = json.loads(raw)
            outcome.completion_ids = [body["id"]]
            choice = body["choices"][0]
            outcome.content = choice["message"]["content"]
            outcome.finish_reason = choice["finish_reason"]
            usage = body["usage"]
        else:
            events = [e[6:] for e in raw.decode().split("\n\n") if e.startswith("data: ")]
            if not events or events[-1] != "[DONE]":
                outcome.problem = "stream did not end with [DONE]"
                return
            chunks = [json.loads(e) for e in events[:-1]]
            outcome.completion_ids = [c["id"] for c in chunks]
            parts = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
            outcome.content = "".join(parts)
            finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
            outcome.finish_reason = next((f for f in finishes if f), None)
            usage = chunks[-1]["usage"]
        outcome.prompt_tokens = usage["prompt_tokens"]
        outcome.completion_tokens = usage["completion_tokens"]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        outcome.problem = f"unparsable reply ({type(error).__name__}): {raw[:200]!r}"


def one_request(
    connection: http.client.HTTPConnection,
    model: str,
    client: int,
    number: int,
    serial: int,
    stream: bool,
    started: float,
) -> Outcome:
    rid = request_id(client, number)
    pad, max_tokens = request_shape(serial)
    body: dict[str, Any] = {
        "model": model,
        "messages": request_messages(rid, pad),
        "max_tokens": max_tokens,
        "temperature": 0,
        "user": rid,
    }
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    sent = time.monotonic()
    outcome = Outcome(rid, client, pad, max_tokens, stream, sent - started, 0.0, None)
    try:
        connection.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        raw = response.read()
        outcome.status = response.status
        outcome.retry_after = response.getheader("Retry-After")
        _parse_reply(outcome, raw)
    except (OSError, http.client.HTTPException) as error:  # timeouts included: the request is lost
        outcome.problem = f"{type(error).__name__}: {error}"
        connection.close()
    outcome.latency_s = time.monotonic() - sent
    return outcome


def drive(
    host: str,
    port: int,
    *,
    model: str = "m",
    clients: int = 32,
    seconds: float = 60.0,
    max_requests_per_client: int = 100_000,
    request_timeout_s: float = 60.0,
    stream_every: int = 4,
    retry_after_fraction: float = 0.25,
    seed: int = 0,
) -> list[Outcome]:
    """`clients` threads, each with its own keep-alive connection, sending one request after
    another until `seconds` pass or it has sent `max_requests_per_client` (a bounded loop).
    Every `stream_every`-th request streams. After a 503 a client sleeps
    `retry_after_fraction` x Retry-After (with jitter) before its next, new request."""
    started = time.monotonic()
    deadline = started + seconds
    results: list[list[Outcome]] = [[] for _ in range(clients)]

    def run(client: int) -> None:
        rng = random.Random(seed * 1000 + client)
        connection = http.client.HTTPConnection(host, port, timeout=request_timeout_s)
        for number in range(max_requests_per_client):
            if time.monotonic() >= deadline:
                break
            serial = client * max_requests_per_client + number
            stream = stream_every > 0 and number % stream_every == stream_every - 1
            outcome = one_request(connection, model, client, number, serial, stream, started)
            results[client].append(outcome)
            if outcome.status == 503:
                wait = float(outcome.retry_after or 1) * retry_after_fraction
                time.sleep(wait * rng.uniform(0.5, 1.5))
        connection.close()

    threads = [threading.Thread(target=run, args=(c,), name=f"load-{c}") for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + request_timeout_s + 60)
    hung = [thread.name for thread in threads if thread.is_alive()]
    if hung:  # a client stuck past its own socket timeout: its requests cannot be accounted for
        raise RuntimeError(f"clients still waiting after the run: {', '.join(hung)}")
    return [outcome for client in results for outcome in client]


# ---------------------------------------------------------------- the report
def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) with linear interpolation between order statistics."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarise(
    outcomes: list[Outcome],
    seconds: float,
    rss: list[tuple[float, int]],
    warmup_s: float,
) -> dict[str, Any]:
    ok = [o for o in outcomes if o.status == 200 and o.problem is None]
    busy = [o for o in outcomes if o.status == 503]
    latencies = [o.latency_s for o in ok]
    after_warmup = [b for t, b in rss if t >= warmup_s]
    baseline = after_warmup[0] if after_warmup else None
    peak = max(after_warmup) if after_warmup else None
    return {
        "requests": len(outcomes),
        "answered_200": len(ok),
        "refused_503": len(busy),
        "refused_503_with_retry_after": sum(1 for o in busy if o.retry_after),
        "other_status": sum(1 for o in outcomes if o.status not in (200, 503)),
        "lost": sum(1 for o in outcomes if o.status is None),
        "requests_per_s": round(len(ok) / seconds, 2) if seconds > 0 else None,
        "completion_tokens_per_s": round(sum(o.completion_tokens or 0 for o in ok) / seconds, 2),
        "latency_p50_s": _round(percentile(latencies, 0.50)),
        "latency_p99_s": _round(percentile(latencies, 0.99)),
        "latency_503_max_s": _round(max((o.latency_s for o in busy), default=None)),
        "rss_start_mb": _mb(rss[0][1]) if rss else None,
        "rss_after_warmup_mb": _mb(baseline),
        "rss_peak_after_warmup_mb": _mb(peak),
        "rss_end_mb": _mb(rss[-1][1]) if rss else None,
        "rss_growth_after_warmup_mb": _mb(peak - baseline) if baseline is not None else None,
        "rss_samples": len(rss),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def print_table(config: dict[str, Any], summary: dict[str, Any]) -> None:
    print(
        f"alloy serve under load: {config['model']}, {config['clients']} clients, "
        f"{config['seconds']} s, max_batch {config['max_batch']}, max_queue {config['max_queue']}"
    )
    rows = [
        ("requests sent", summary["requests"]),
        ("answered 200", summary["answered_200"]),
        ("refused 503 (with Retry-After)",
         f"{summary['refused_503']} ({summary['refused_503_with_retry_after']})"),
        ("other status / lost", f"{summary['other_status']} / {summary['lost']}"),
        ("requests/s (200)", summary["requests_per_s"]),
        ("completion tokens/s", summary["completion_tokens_per_s"]),
        ("latency p50 s", summary["latency_p50_s"]),
        ("latency p99 s", summary["latency_p99_s"]),
        ("slowest 503 s", summary["latency_503_max_s"]),
        ("RSS start / after warm-up MB",
         f"{summary['rss_start_mb']} / {summary['rss_after_warmup_mb']}"),
        ("RSS peak / end MB", f"{summary['rss_peak_after_warmup_mb']} / {summary['rss_end_mb']}"),
        ("RSS growth after warm-up MB", summary["rss_growth_after_warmup_mb"]),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny:llama")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before RSS baseline")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16, help="server default max_tokens")
    parser.add_argument("--threads", type=int, default=1, help="server torch threads")
    parser.add_argument(
        "--check", action="store_true", help="8 clients for 3 s: the script works; no file"
    )
    add_force_argument(parser)
    args = parser.parse_args()
    run = begin("serve_load", force=args.force or args.check)  # --check measures nothing
    if args.check:
        args.clients, args.seconds, args.warmup = 8, 3.0, 1.0
        args.max_batch, args.max_queue = 2, 2  # so that the 503 path runs too
    config = {
        "model": args.model,
        "clients": args.clients,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "max_batch": args.max_batch,
        "max_queue": args.max_queue,
        "server_threads": args.threads,
    }
    load_before = os.getloadavg()
    server = ServeProcess(
        args.model,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_tokens=args.max_tokens,
        threads=args.threads,
    )
    try:
        sampler = RssSampler(server.pid, interval_s=0.5 if args.check else 1.0)
        started = time.monotonic()
        outcomes = drive(server.host, server.port, clients=args.clients, seconds=args.seconds)
        elapsed = time.monotonic() - started
        samples = sampler.stop()
    finally:
        server.stop()
    summary = summarise(outcomes, elapsed, samples, args.warmup)
    print_table(config, summary)
    if args.check:
        return
    from alloylm.atomic import atomic_write_json

    atomic_write_json(
        results_dir() / "serve_load.json",
        {
            "benchmark": "serve_load",
            **config,
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "load_avg_before": list(load_before),
                "load_avg_after": list(os.getloadavg()),
            },
            "summary": summary,
            "rss_samples": [[round(t, 2), b] for t, b in samples],
            "run": run_record(run),  # date, load at start and end, CPU (benchmarks/_common.py)
        },
    )


if __name__ == "__main__":
    main()
