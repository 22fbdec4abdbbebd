"""`alloy serve` speed through the official `openai` client: time to first token and tokens/s with
1 and 8 concurrent streaming clients, 8 requests one after another vs at once (same greedy
answers), and head-of-line blocking (a 1-token request alone vs behind a long one).

    python benchmarks/serve_speed.py [--model embedded:smollm2-135m-instruct] [--max-tokens 128] [--threads N]
    python benchmarks/serve_speed.py --check     # tiny:llama, a few tokens, nothing written
    python benchmarks/serve_speed.py --llama-cpp [--gguf-dtype f16]   # + llama.cpp's server as a peer

With --llama-cpp the same measurements run against llama-cpp-python's OpenAI-compatible server
(from the side venv .ci/side-venvs.sh builds; LLAMA_CPP_PYTHON) on the same model exported to
GGUF by alloylm, with as many threads; the table then shows both servers and their ratio.

Prints a table and writes benchmarks/results/serve_speed.json (not with --check). Run it on an
idle machine: the load average is recorded with the numbers, and numbers from a loaded machine
must not be published.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import openai

from alloylm.atomic import atomic_write_json
from alloylm.chat.serve import start_server
from alloylm.models.sources import resolve_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_force_argument, begin, results_dir, run_record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "What does collagen do in bone?",
    "How do leaves move water?",
    "Name the layers of the skin.",
    "What is the role of ATP in muscle?",
    "How are tendons different from ligaments?",
    "What is cartilage made of?",
    "Why are bones hollow?",
    "How does a leaf resist tearing?",
]


def stream_one(client: openai.OpenAI, model: str, question: str, max_tokens: int) -> dict[str, Any]:
    """One streamed greedy request: seconds to the first content token, total, tokens, text."""
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    tokens = 0
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - started
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    if not tokens:
        # llama-cpp-python's server ignores stream_options.include_usage (no usage chunk); it
        # streams one token per chunk, so the content chunks count the tokens
        tokens = len(parts)
    total = time.perf_counter() - started
    return {"ttft_s": first or total, "seconds": total, "tokens": tokens, "text": "".join(parts)}


def concurrent(client: openai.OpenAI, model: str, clients: int, max_tokens: int) -> dict[str, Any]:
    results: list[dict[str, Any]] = [{} for _ in range(clients)]

    def run(slot: int) -> None:
        results[slot] = stream_one(client, model, QUESTIONS[slot % len(QUESTIONS)], max_tokens)

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    tokens = sum(r["tokens"] for r in results)
    decode = [
        (r["tokens"] - 1) / (r["seconds"] - r["ttft_s"])
        for r in results
        if r["tokens"] > 1 and r["seconds"] > r["ttft_s"]
    ]
    return {
        "clients": clients,
        "wall_s": round(wall, 3),
        "tokens": tokens,
        "aggregate_tokens_per_s": round(tokens / wall, 2),
        "ttft_median_s": round(statistics.median(r["ttft_s"] for r in results), 3),
        "ttft_max_s": round(max(r["ttft_s"] for r in results), 3),
        "per_client_tokens_per_s": round(statistics.median(decode), 2) if decode else None,
        "texts": [r["text"] for r in results],
    }


def head_of_line(client: openai.OpenAI, model: str, long_tokens: int) -> dict[str, float]:
    """Latency of a 1-token request alone, and while a long request is generating."""
    alone = stream_one(client, model, QUESTIONS[0], 1)["seconds"]
    started = threading.Event()

    def long_request() -> None:
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": QUESTIONS[1]}],
            max_tokens=long_tokens,
            temperature=0,
            stream=True,
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                started.set()
        started.set()

    thread = threading.Thread(target=long_request)
    thread.start()
    started.wait()
    behind = stream_one(client, model, QUESTIONS[0], 1)["seconds"]
    thread.join()
    return {"short_alone_s": round(alone, 3), "short_behind_long_s": round(behind, 3)}


def start_llama_cpp_server(gguf: Path, threads: int) -> tuple[Any, str]:
    """llama-cpp-python's server (`python -m llama_cpp.server`) on a free loopback port."""
    import json
    import socket
    import subprocess
    import urllib.request

    python = os.environ.get(
        "LLAMA_CPP_PYTHON", str(ROOT / ".ci-venvs" / "llamacpp" / "bin" / "python")
    )
    if not Path(python).exists():
        raise SystemExit(
            f"llama-cpp-python not found at {python}: run .ci/side-venvs.sh or set LLAMA_CPP_PYTHON"
        )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            python,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--model_alias",
            "m",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            str(threads),
            "--n_ctx",
            "2048",
            # by default a new request interrupts the one running: 8 clients would then get 64
            # tokens between them, not 8 x 64; its server answers them one at a time instead
            "--interrupt_requests",
            "False",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # a pipe would fill with the load log and stop the server
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"llama.cpp's server stopped (exit {process.returncode})")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                json.loads(response.read())
                return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("llama.cpp's server did not answer within 120 s")


def measure(client: openai.OpenAI, max_tokens: int) -> dict[str, Any]:
    stream_one(client, "m", QUESTIONS[0], 4)  # warm-up, not timed
    return {
        "one": concurrent(client, "m", 1, max_tokens),
        "eight": concurrent(client, "m", 8, max_tokens),
    }


def llama_cpp_peer(folder: Path, dtype: str, threads: int, max_tokens: int) -> dict[str, Any]:
    """The same time-to-first-token and tokens/s, 1 and 8 clients, from llama.cpp's server."""
    import tempfile

    from alloylm.models.export_gguf import export_gguf

    with tempfile.TemporaryDirectory() as scratch:
        gguf = Path(scratch) / f"model-{dtype}.gguf"
        export_gguf(folder, gguf, dtype=dtype)
        process, url = start_llama_cpp_server(gguf, threads)
        try:
            client = openai.OpenAI(base_url=url, api_key="none", timeout=600)
            return {"gguf_dtype": dtype, "threads": threads, **measure(client, max_tokens)}
        finally:
            process.terminate()
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--long-tokens", type=int, default=150)
    parser.add_argument("--threads", type=int, default=None, help="server torch threads")
    parser.add_argument(
        "--check", action="store_true", help="tiny:llama, 4 tokens: the script works; no file"
    )
    parser.add_argument(
        "--llama-cpp", action="store_true", help="also measure llama.cpp's server on a GGUF export"
    )
    parser.add_argument("--gguf-dtype", default="f16", help="the export's dtype for --llama-cpp")
    add_force_argument(parser)
    args = parser.parse_args()
    if args.check:
        args.model, args.max_tokens, args.long_tokens = "tiny:llama", 4, 8
    run = begin("serve_speed", force=args.force or args.check)  # --check measures nothing
    folder = resolve_model(args.model)
    server, _ = start_server(folder, model_name="m", max_batch=8, threads=args.threads)
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="none", timeout=600
    )
    try:
        stream_one(client, "m", QUESTIONS[0], 4)  # warm-up, not timed
        one = concurrent(client, "m", 1, args.max_tokens)
        eight = concurrent(client, "m", 8, args.max_tokens)
        started = time.perf_counter()
        sequential = [
            stream_one(client, "m", question, args.max_tokens)["text"] for question in QUESTIONS
        ]
        sequential_s = time.perf_counter() - started
        blocking = head_of_line(client, "m", args.long_tokens)
    finally:
        server.shutdown()
        server.server_close()
    same = sequential == eight["texts"]
    rows = [one, eight]
    peer = None
    if args.llama_cpp:
        import torch

        threads = args.threads or torch.get_num_threads()
        peer = llama_cpp_peer(folder, args.gguf_dtype, threads, args.max_tokens)
    print(f"alloy serve speed: {args.model}, greedy, max_tokens={args.max_tokens}, streamed")
    print(
        f"{'clients':>7} {'TTFT med s':>10} {'TTFT max s':>10} {'tok/s/client':>12} {'tok/s all':>9}"
    )
    for r in rows:
        per_client = r["per_client_tokens_per_s"]
        print(
            f"{r['clients']:>7} {r['ttft_median_s']:>10.3f} {r['ttft_max_s']:>10.3f} "
            f"{per_client if per_client is not None else '-':>12} {r['aggregate_tokens_per_s']:>9.2f}"
        )
    print(
        f"8 requests one after another {sequential_s:.2f} s, at once {eight['wall_s']:.2f} s "
        f"({sequential_s / eight['wall_s']:.2f}x); same answers: {same}"
    )
    print(
        f"1-token request: alone {blocking['short_alone_s']:.3f} s, behind a "
        f"{args.long_tokens}-token one {blocking['short_behind_long_s']:.3f} s"
    )
    if peer is not None:
        print(
            f"llama.cpp server ({peer['gguf_dtype']} GGUF, {peer['threads']} threads) vs alloy serve:"
        )
        for ours, theirs in ((one, peer["one"]), (eight, peer["eight"])):
            ratio = theirs["aggregate_tokens_per_s"] / max(ours["aggregate_tokens_per_s"], 1e-9)
            print(
                f"{theirs['clients']:>7} clients: TTFT med {theirs['ttft_median_s']:.3f} s "
                f"(ours {ours['ttft_median_s']:.3f}), tok/s all {theirs['aggregate_tokens_per_s']:.2f} "
                f"(ours {ours['aggregate_tokens_per_s']:.2f}, llama.cpp/ours {ratio:.2f}x)"
            )
    if args.check:
        return
    for row in rows:
        row.pop("texts")
    if peer is not None:
        for row in (peer["one"], peer["eight"]):
            row.pop("texts")
    atomic_write_json(
        results_dir() / "serve_speed.json",
        {
            "benchmark": "serve_speed",
            "model": args.model,
            "max_tokens": args.max_tokens,
            "server_threads": args.threads,
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "load_avg_1m": os.getloadavg()[0],
            },
            "rows": rows,
            "sequential_8_s": round(sequential_s, 3),
            "concurrent_8_s": eight["wall_s"],
            "concurrent_speedup": round(sequential_s / eight["wall_s"], 2),
            "same_answers": same,
            "head_of_line": blocking,
            "llama_cpp": peer,
            "run": run_record(run),  # date, load at start and end, CPU (benchmarks/_common.py)
        },
    )


if __name__ == "__main__":
    main()
