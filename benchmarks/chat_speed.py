"""`alloy chat` speed as a user sees it: the real command on a pseudo-terminal, time to first token
and tokens/s per turn, with one model and with two models side by side.

    python benchmarks/chat_speed.py [--model embedded:smollm2-135m-instruct] [--turns 4] [--max-new-tokens 96]
    python benchmarks/chat_speed.py --check      # tiny:llama, 2 turns of a few tokens, nothing written

Each turn is typed and sent with Enter. "first token" is measured twice: by the chat itself (from
the request to the first generated token, as its /save JSON records) and on the terminal (from
Enter to the first byte of the answer, which also counts the chat's own bookkeeping and drawing;
one model only: side by side, the columns are drawn before the first token arrives).
Greedy decoding (temperature 0) so that every run generates the same tokens. Prints a table and
writes benchmarks/results/chat_speed.json (not with --check); the load is recorded with it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import re
import select
import signal
import statistics
import struct
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Any

from alloylm.atomic import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_force_argument, begin, results_dir, run_record  # noqa: E402

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
PROMPT = rb"you> $"
TURNS = [
    "What does collagen do in bone?",
    "How is that different in a tendon?",
    "Name one disease where it goes wrong.",
    "Summarise our conversation in one sentence.",
    "What does a leaf's vein network do?",
    "Compare it with blood vessels.",
]


class Terminal:
    """`alloy chat ...` on a pseudo-terminal 200 columns wide (columns layout for 2 models)."""

    def __init__(self, args: list[str], folder: Path, threads: int | None) -> None:
        env = {**os.environ, "TERM": "xterm", "COLUMNS": "200"}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(folder)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execve(sys.executable, [sys.executable, "-m", "alloylm.cli.main", *args], env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.raw = b""

    def _read(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self.fd, 65536)
        except OSError:
            return b""

    def wait_for(self, pattern: bytes, timeout: float) -> None:
        end = time.monotonic() + timeout
        start = len(self.raw)
        while time.monotonic() < end:
            self.raw += self._read(0.1)
            if re.search(pattern, ANSI.sub(b"", self.raw[start:])):
                return
        raise SystemExit(f"chat_speed: no {pattern!r} within {timeout} s:\n{self.raw[-2000:]!r}")

    def turn(self, text: str, timeout: float) -> float:
        """Send one line; seconds from Enter to the first byte after the echoed line."""
        os.write(self.fd, text.encode() + b"\r")
        sent = time.monotonic()
        echo = text.encode()
        start = len(self.raw)
        first = None
        while time.monotonic() - sent < timeout:
            chunk = self._read(0.05)
            now = time.monotonic()
            if chunk:
                self.raw += chunk
                after = ANSI.sub(b"", self.raw[start:])
                tail = after.split(echo, 1)[1] if echo in after else b""
                if first is None and tail.strip(b"\n "):
                    first = now - sent
                if re.search(PROMPT, after):
                    return first if first is not None else now - sent
        raise SystemExit(f"chat_speed: the turn {text!r} did not finish within {timeout} s")

    def close(self) -> None:
        os.write(self.fd, b"\x04")  # Ctrl-D leaves the chat
        end = time.monotonic() + 30
        while time.monotonic() < end:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            self._read(0.2)
        else:
            os.kill(self.pid, signal.SIGKILL)
        os.close(self.fd)


def run_chat(models: list[str], turns: int, max_new_tokens: int, threads: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="chat-speed-") as folder:
        args = [*models, "--temperature", "0", "--max-new-tokens", str(max_new_tokens)]
        if len(models) > 1:
            args += ["--layout", "columns"]
        if threads:
            args += ["--threads", str(threads)]
        started = time.monotonic()
        terminal = Terminal(["chat", *args], Path(folder), threads)
        terminal.wait_for(PROMPT, timeout=300)
        startup_s = time.monotonic() - started
        seen = [terminal.turn(text, timeout=600) for text in TURNS[:turns]]
        os.write(terminal.fd, b"/save transcript\r")
        terminal.wait_for(PROMPT, timeout=60)
        terminal.close()
        saved = json.loads((Path(folder) / "transcript.json").read_text())
    answers = [turn for model in saved["models"] for turn in model["turns"]]
    rates = [a["tokens_per_s"] for a in answers if a.get("tokens_per_s")]
    firsts = [a["first_token_s"] for a in answers if a.get("first_token_s") is not None]
    return {
        "models": len(models),
        "turns": turns,
        "startup_s": round(startup_s, 2),
        "first_token_median_s": round(statistics.median(firsts), 3) if firsts else None,
        "first_token_max_s": round(max(firsts), 3) if firsts else None,
        # side by side, the columns are drawn before any token arrives: only one model's stream
        # shows its first token as the first byte on the terminal
        "terminal_first_byte_median_s": round(statistics.median(seen), 3)
        if len(models) == 1
        else None,
        "tokens_per_s_median": round(statistics.median(rates), 2) if rates else None,
        "completion_tokens": [a["completion_tokens"] for a in answers],
        "prompt_tokens": [a["prompt_tokens"] for a in answers],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--turns", type=int, default=4, help=f"at most {len(TURNS)}")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads of the chat")
    parser.add_argument("--check", action="store_true", help="tiny:llama, nothing written")
    add_force_argument(parser)
    args = parser.parse_args(argv)
    if args.check:
        args.model, args.turns, args.max_new_tokens = "tiny:llama", 2, 4
    run = begin("chat_speed", force=args.force or args.check)
    rows = [
        run_chat([args.model], args.turns, args.max_new_tokens, args.threads),
        run_chat([args.model, args.model], args.turns, args.max_new_tokens, args.threads),
    ]
    print(f"alloy chat speed: {args.model}, greedy, max_new_tokens={args.max_new_tokens}")
    print(f"{'models':>6} {'start s':>8} {'1st tok med s':>13} {'1st tok max s':>13} "
          f"{'terminal 1st s':>14} {'tok/s med':>9}")  # fmt: skip
    for row in rows:
        print(f"{row['models']:>6} {row['startup_s']:>8.2f} {row['first_token_median_s']:>13} "
              f"{row['first_token_max_s']:>13} {row['terminal_first_byte_median_s'] or '-':>14} "
              f"{row['tokens_per_s_median']:>9}")  # fmt: skip
    if args.check:
        return
    record: dict[str, Any] = {
        "benchmark": "chat_speed",
        "model": args.model,
        "max_new_tokens": args.max_new_tokens,
        "threads": args.threads,
        "rows": rows,
        "run": run_record(run),
    }
    atomic_write_json(results_dir() / "chat_speed.json", record)
    print(f"written to {results_dir() / 'chat_speed.json'}")


if __name__ == "__main__":
    main()
