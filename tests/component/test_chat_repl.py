"""`alloy chat`, driven through a pseudo-terminal as a user would type, and its session engine.

Two tiny random Llamas answer every turn with a fixed seed; the output is read back from the
terminal and from the /save files.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
PROMPT = rb"you> $"


class Terminal:
    """`alloy chat ...` on a pseudo-terminal of the given width."""

    def __init__(self, args: list[str], columns: int, tmp: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TERM": "xterm", "COLUMNS": str(columns)}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the chat itself
            os.chdir(tmp)
            # a shell that starts the suite in the background ignores SIGINT, and an ignored
            # SIGINT is inherited: Ctrl-C must reach the chat as it does in a terminal
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execve(sys.executable, [sys.executable, "-m", "alloylm.cli.main", *args], env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
        self.raw = b""
        self.mark = 0

    def read_until(self, pattern: bytes, timeout: float = 45) -> str:
        """Output since the last call, once `pattern` (on the ANSI-stripped text) shows up."""
        end = time.time() + timeout
        while time.time() < end:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                self.raw += chunk
            clean = ANSI.sub(b"", self.raw[self.mark :])
            if re.search(pattern, clean):
                self.mark = len(self.raw)
                return clean.decode("utf-8", "replace")
        raise AssertionError(
            f"no {pattern!r} within {timeout} s; got:\n"
            + ANSI.sub(b"", self.raw[self.mark :]).decode("utf-8", "replace")
        )

    def line(self, text: str, until: bytes = PROMPT) -> str:
        os.write(self.fd, text.encode() + b"\r")
        return self.read_until(until)

    def key(self, byte: bytes, until: bytes) -> str:
        os.write(self.fd, byte)
        return self.read_until(until)

    def key_at_prompt(self, byte: bytes, until: bytes, tries: int = 5) -> str:
        """A key pressed at the prompt, pressed again when nothing comes back, as a user would:
        a SIGINT that lands after the prompt is drawn but before readline waits in select()
        is taken and lost (CPython's readline; seen under load)."""
        for _ in range(tries - 1):
            os.write(self.fd, byte)
            try:
                return self.read_until(until, timeout=5)
            except AssertionError:
                continue
        return self.key(byte, until)

    def exit_code(self, timeout: float = 20) -> int:
        end = time.time() + timeout
        while time.time() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            try:  # keep draining so that the child never blocks on a full terminal
                if select.select([self.fd], [], [], 0.1)[0]:
                    os.read(self.fd, 65536)
            except OSError:
                time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("alloy chat did not exit")


CHAT = ["chat", "tiny:llama", "tiny:llama:1", "--seed", "1", "--max-new-tokens", "8"]
CHAT += ["--threads", "1"]


def _saved(base: Path) -> tuple[str, dict]:
    return base.with_suffix(".md").read_text(), json.loads(base.with_suffix(".json").read_text())


@pytest.mark.timeout(90)
def test_wide_terminal_two_models_in_columns_with_commands(tmp_path: Path) -> None:
    term = Terminal(CHAT, 160, tmp_path)
    banner = term.read_until(PROMPT, timeout=60)
    assert "chatting with tiny:llama, tiny:llama:1" in banner
    assert "seed=1" in banner and "top_k=512" in banner  # the study preset by default
    assert "system prompt set" in term.line("/system You answer briefly.")
    first = term.line("hello there")
    # Columns: both names on one line, each answer's statistics below it.
    assert re.search(r"tiny:llama\s{3,}tiny:llama:1", first)
    assert first.count("8 tokens") >= 2
    shown = term.line("/set preset=greedy max_new_tokens=5")
    assert "temperature=0.0" in shown and "max_new_tokens=5" in shown
    assert "not changed" in term.line("/set top_k=abc")
    assert "expected an integer" in term.line("/set top_k=abc")
    assert "unknown setting 'colour'" in term.line("/set colour=blue")
    term.line("and again")
    assert "saved" in term.line("/save talk")
    assert "/save PATH" in term.line("/help")
    assert "unknown command /bogus" in term.line("/bogus")
    assert "conversation reset" in term.line("/reset")
    term.line("/save after-reset.json")  # the suffix is dropped: after-reset.md + .json
    assert "bye" in term.key(b"\x04", rb"bye")  # Ctrl-D
    assert term.exit_code() == 0

    markdown, data = _saved(tmp_path / "talk")
    assert data["alloylm_chat"] == 1 and data["system"] == "You answer briefly."
    assert [m["model"]["name"] for m in data["models"]] == ["tiny:llama", "tiny:llama:1"]
    for model in data["models"]:  # no alloy.json: the model files' hash identifies them
        assert re.fullmatch(r"[0-9a-f]{64}", model["model"]["model_hash"])
    first_turn, second_turn = data["turns"]
    assert first_turn["params"]["seed"] == 1 and first_turn["params"]["temperature"] == 1.0
    assert second_turn["params"]["temperature"] == 0.0
    assert second_turn["params"]["max_new_tokens"] == 5
    # Each model keeps its own history: its own answers, never the other's.
    for entry in data["models"]:
        name = entry["model"]["name"]
        roles = [m["role"] for m in entry["messages"]]
        assert roles == ["system", "user", "assistant", "user", "assistant"]
        assert [m["content"] for m in entry["messages"] if m["role"] == "assistant"] == [
            turn["answers"][name] for turn in data["turns"]
        ]
        assert [t["completion_tokens"] for t in entry["turns"]] == [8, 5]
    answers = first_turn["answers"]
    assert answers["tiny:llama"] != answers["tiny:llama:1"]  # two different models answered
    for text in answers.values():  # what was streamed on the terminal is what was saved
        assert text.split()[0] in first
    assert "## Turn 2" in markdown and "You answer briefly." in markdown
    assert data["models"][1]["model"]["model_hash"] in markdown
    _, reset = _saved(tmp_path / "after-reset")
    assert reset["turns"] == [] and reset["system"] == "You answer briefly."


@pytest.mark.timeout(90)
def test_narrow_terminal_stacks_the_same_answers_and_ctrl_c_leaves(tmp_path: Path) -> None:
    term = Terminal(CHAT, 60, tmp_path)
    term.read_until(PROMPT, timeout=60)
    term.line("/system You answer briefly.")
    shown = term.line("hello there")
    # Stacked: one model's answer after the other, each under its own label line.
    assert re.search(r"\[tiny:llama\]\n[\s\S]*?\n\(8 tokens[^\n]*\n+\[tiny:llama:1\]\n", shown)
    term.line("/save narrow")
    # Ctrl-C while a long answer streams stops it and drops the turn; the chat goes on.
    term.line("/set max_new_tokens=4000")
    os.write(term.fd, b"tell me everything\r")
    term.read_until(rb"\[tiny:llama\]\n[\s\S]{3}")  # the answer has begun
    assert "interrupted" in term.key(b"\x03", PROMPT)
    term.line("/save after-ctrl-c")
    assert "bye" in term.key_at_prompt(b"\x03", rb"bye")  # Ctrl-C at the prompt
    assert term.exit_code() == 0
    _, data = _saved(tmp_path / "narrow")
    # The same seed gives the same answers as in columns (where the models ran at once).
    answers = data["turns"][0]["answers"]
    for name, text in answers.items():
        assert f"[{name}]\n{text}\n" in shown
    _, after = _saved(tmp_path / "after-ctrl-c")
    assert len(after["turns"]) == 1 and after["turns"][0]["answers"] == answers


# ---------------------------------------------------------------- the engine, in process
@pytest.fixture(scope="module")
def generators(tiny_llama: Path, tiny_llama_other: Path):
    from alloylm.generation.batching import ModelGenerator

    made = [ModelGenerator(tiny_llama, threads=1), ModelGenerator(tiny_llama_other, threads=1)]
    yield made
    for generator in made:
        generator.close()


def _session(generators, folders, **kwargs):
    from alloylm.chat.conversations import ModelInfo
    from alloylm.chat.repl import ChatModel, ChatSession

    models = [
        ChatModel(ModelInfo(f"m{i}", f"m{i}", str(folder), **kwargs.pop(f"info{i}", {})), g)
        for i, (g, folder) in enumerate(zip(generators, folders, strict=True))
    ]
    return ChatSession(models, **kwargs)


def test_answers_stream_in_pieces_that_add_up(generators, tiny_llama, tiny_llama_other) -> None:
    from alloylm.chat.conversations import GenerationSettings

    settings = GenerationSettings(seed=3, max_new_tokens=10)
    session = _session(generators, [tiny_llama, tiny_llama_other], settings=settings)
    pieces: dict[int, list[str]] = {0: [], 1: []}
    done: list[int] = []
    turn = session.ask(
        "hi",
        concurrent=True,
        on_delta=lambda i, d: pieces[i].append(d),
        on_done=lambda i, a: done.append(i),
    )
    assert sorted(done) == [0, 1]
    for index, answer in enumerate(turn.answers):
        assert len(pieces[index]) >= 2  # streamed, not handed over whole
        assert "".join(pieces[index]) == answer.text
        assert answer.completion_tokens == 10
    # Turn 2 of the conversation uses seed 4 and sees each model's own first answer.
    second = session.ask("more", concurrent=False)
    assert second.params["seed"] == 4
    for index, generator in enumerate(generators):
        history = session.history(index)
        assert history[1]["content"] == turn.answers[index].text
        prompt = generator.encode_chat(history[:-1])
        assert second.answers[index].prompt_tokens == len(prompt)


def test_settings_commands_and_lineage_in_the_saved_files(
    generators, tiny_llama, tiny_llama_other, tmp_path
) -> None:
    lineage = {"lineage": "sft@0123456789ab", "content_hash": "0123456789ab" + "c" * 52}
    session = _session(generators, [tiny_llama, tiny_llama_other], info1=lineage)
    assert session.settings.preset == "study" and session.settings.seed is None
    session.update_settings(["preset=greedy", "max_tokens=4", "seed=7"])
    assert session.describe_settings().startswith("preset=greedy: max_new_tokens=4")
    with pytest.raises(ValueError, match="temperature"):
        session.update_settings(["temperature=-1"])
    with pytest.raises(ValueError, match="key=value"):
        session.update_settings(["temperature"])
    session.update_settings(["seed=none"])
    assert session.settings.seed is None and session.settings.max_new_tokens == 4
    session.ask("hello", concurrent=True)
    markdown, data = session.save(tmp_path / "deep" / "chat.md")
    assert markdown == tmp_path / "deep" / "chat.md" and data.name == "chat.json"
    saved = json.loads(data.read_text())
    assert saved["models"][1]["model"]["lineage"] == "sft@0123456789ab"
    assert "lineage `sft@0123456789ab`" in markdown.read_text()
    assert saved["turns"][0]["params"]["temperature"] == 0.0


def test_a_conversation_longer_than_the_context_is_refused(generators, tiny_llama) -> None:
    from alloylm.chat.repl import ChatError

    session = _session(generators[:1], [tiny_llama])
    limit = generators[0].context_length
    assert limit is not None
    with pytest.raises(ChatError, match=f"context is {limit}"):
        session.ask("word " * limit, concurrent=False)
    assert session.turns == []  # nothing kept; the chat can go on


def test_layout_follows_the_terminal_width() -> None:
    from alloylm.chat.repl import choose_layout, tail_lines

    assert tail_lines("one two three four\nfive", 9, 2) == "four\nfive"
    assert tail_lines("abcdefghij", 4, 5) == "abcd\nefgh\nij"

    assert choose_layout(2, 160) == "columns"
    assert choose_layout(2, 60) == "stacked"
    assert choose_layout(1, 200) == "stacked"
    assert choose_layout(3, 60, "columns") == "columns"
    assert choose_layout(4, 4 * 36 + 9) == "columns" and choose_layout(4, 4 * 36 + 8) == "stacked"
