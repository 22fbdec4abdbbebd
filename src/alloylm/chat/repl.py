"""`alloy chat`: a multi-turn terminal chat with one or more models, streamed as generated.

Every user turn is answered by each model; each model keeps its own history (it sees its own
earlier answers, never another model's). Answers come from `alloylm/generation/` (the one loop:
template, stop rule, sampling), streamed as tokens are generated:

- several models on a wide terminal: side by side, one column each, all generating at once
  (each model has its own scheduler thread), redrawn as deltas arrive;
- one model, or a terminal too narrow for columns: one answer after another, printed as it comes.

Sampling uses the conversation scripts' settings (`GenerationSettings`: a preset with fields
replaced); turn i of a conversation uses seed + i, as a script's turns do, so a seeded chat
replays the same. Slash commands (`COMMANDS`) change the system prompt and sampling, reset the
conversation and save it as Markdown + JSON with each model's lineage.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from alloylm.chat.conversations import GenerationSettings, ModelInfo
from alloylm.generation.sampling import SamplingParams

CHAT_VERSION = 1
MIN_COLUMN_WIDTH = 36  # below this a column is too narrow to read; answers are stacked instead
SETTABLE = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed")
ALIASES = {"max_tokens": "max_new_tokens", "tokens": "max_new_tokens"}
HELP = """\
commands:
  /system TEXT      set the system prompt for the next turns (/system alone shows it,
                    /system none removes it)
  /set K=V ...      sampling: preset=greedy|study, temperature, top_p, top_k,
                    repetition_penalty, max_new_tokens, seed (an integer or none);
                    /set alone shows the settings. preset= starts again from that preset
  /reset            forget the conversation (system prompt and settings stay)
  /save PATH        write PATH.md and PATH.json: the conversation, settings, lineages
  /help             this text
  /quit             leave (so do Ctrl-D, and Ctrl-C at the prompt)
Ctrl-C while the models answer stops the answers; that turn is dropped."""


# ---------------------------------------------------------------- the conversation state
class ChatError(Exception):
    """A turn that cannot be answered (the conversation outgrew a model's context, a model
    failed); the chat says so and goes on without that turn."""


@dataclass
class Answer:
    """One model's answer to one turn."""

    text: str
    seconds: float
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    first_token_s: float | None = None

    @property
    def tokens_per_s(self) -> float | None:
        return round(self.completion_tokens / self.seconds, 2) if self.seconds > 0 else None


@dataclass
class ChatTurn:
    user: str
    system: str | None
    params: dict[str, Any]  # the sampling this turn used (settings may change between turns)
    answers: list[Answer] = field(default_factory=list)  # one per model, in the models' order


@dataclass
class ChatModel:
    info: ModelInfo
    generator: (
        Any  # an alloylm.generation.batching.ModelGenerator (or anything with its submit_many)
    )


class ChatSession:
    """Models, system prompt, sampling settings and the turns so far; no terminal I/O."""

    def __init__(
        self,
        models: Sequence[ChatModel],
        *,
        settings: GenerationSettings | None = None,
        system: str | None = None,
    ) -> None:
        if not models:
            raise ValueError("a chat needs at least one model")
        self.models = list(models)
        self.settings = settings or GenerationSettings(seed=None)
        self.settings.params()  # a bad preset or value fails here, not at the first turn
        self.system = system
        self.turns: list[ChatTurn] = []
        self.started = _now()

    @property
    def names(self) -> list[str]:
        return [model.info.name for model in self.models]

    def history(self, model_index: int) -> list[dict[str, str]]:
        """What model `model_index` has seen: the system prompt, the turns and its own answers."""
        messages = [{"role": "system", "content": self.system}] if self.system else []
        for turn in self.turns:
            messages.append({"role": "user", "content": turn.user})
            messages.append({"role": "assistant", "content": turn.answers[model_index].text})
        return messages

    def next_params(self) -> SamplingParams:
        return self.settings.params(len(self.turns))

    def ask(
        self,
        text: str,
        *,
        concurrent: bool,
        on_delta: Callable[[int, str], None] = lambda index, delta: None,
        on_start: Callable[[int], None] = lambda index: None,
        on_done: Callable[[int, Answer], None] = lambda index, answer: None,
    ) -> ChatTurn:
        """Every model answers `text`; the turn joins the history once all have answered.

        `concurrent`: all models generate at once (for columns), else one after another. On
        KeyboardInterrupt every running answer is cancelled and the turn is not kept.
        """
        params = self.next_params()
        turn = ChatTurn(text, self.system, _params_dict(params))
        prompts = [
            model.generator.encode_chat([*self.history(index), {"role": "user", "content": text}])
            for index, model in enumerate(self.models)
        ]
        for model, prompt in zip(self.models, prompts, strict=True):
            limit = getattr(model.generator, "context_length", None)
            if limit is not None and len(prompt) >= limit:
                raise ChatError(
                    f"the conversation is {len(prompt)} tokens, {model.info.name}'s context is "
                    f"{limit}: /save it if you like, then /reset"
                )
        answers: list[Answer | None] = [None] * len(self.models)
        order = (
            [list(range(len(self.models)))]
            if concurrent
            else [[i] for i in range(len(self.models))]
        )
        for group in order:
            self._run_group(group, prompts, params, answers, on_start, on_delta, on_done)
        turn.answers = [answer for answer in answers if answer is not None]
        self.turns.append(turn)
        return turn

    def _run_group(
        self,
        group: Sequence[int],
        prompts: Sequence[list[int]],
        params: SamplingParams,
        answers: list[Answer | None],
        on_start: Callable[[int], None],
        on_delta: Callable[[int, str], None],
        on_done: Callable[[int, Answer], None],
    ) -> None:
        events: queue.Queue[tuple[int, tuple]] = queue.Queue()
        handles = []
        started = time.perf_counter()
        first: dict[int, float] = {}
        try:
            for index in group:
                on_start(index)
                generator = self.models[index].generator

                def listen(_: int, event: tuple, index: int = index) -> None:
                    events.put((index, event))

                handles += generator.submit_many(prompts[index], [params], listen)
            open_rows = set(group)
            while open_rows:
                try:  # a timeout, so that Ctrl-C reaches this thread promptly
                    index, event = events.get(timeout=0.1)
                except queue.Empty:
                    continue
                if event[0] == "delta":
                    if event[1]:
                        first.setdefault(index, time.perf_counter() - started)
                        on_delta(index, event[1])
                    continue
                result = event[1]
                if result.error is not None:
                    name = self.models[index].info.name
                    raise ChatError(f"{name} failed: {result.error!r}") from result.error
                open_rows.discard(index)
                answer = Answer(
                    text=result.text,
                    seconds=round(time.perf_counter() - started, 3),
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens,
                    finish_reason=result.finish_reason,
                    first_token_s=None if index not in first else round(first[index], 3),
                )
                answers[index] = answer
                on_done(index, answer)
        finally:
            for handle in handles:
                handle.cancel()

    # -- commands
    def set_system(self, text: str | None) -> None:
        self.system = text or None

    def reset(self) -> None:
        self.turns = []
        self.started = _now()

    def update_settings(self, assignments: Sequence[str]) -> GenerationSettings:
        """Apply `key=value` pairs (see HELP); raises ValueError naming the bad one."""
        values = self.settings.model_dump()
        pairs = []
        for item in assignments:
            key, sep, raw = item.partition("=")
            key = ALIASES.get(key.strip().replace("-", "_"), key.strip().replace("-", "_"))
            if not sep or not raw.strip():
                raise ValueError(f"{item!r}: write key=value, e.g. temperature=0.7")
            if key not in (*SETTABLE, "preset"):
                raise ValueError(
                    f"unknown setting {key!r}; settable: preset, {', '.join(SETTABLE)}"
                )
            pairs.append((key, raw.strip()))
        for key, raw in pairs:  # a preset first: it starts again from that preset's values
            if key == "preset":
                values = {**GenerationSettings(seed=values["seed"]).model_dump(), "preset": raw}
        for key, raw in pairs:
            if key != "preset":
                values[key] = _parse_value(key, raw)
        try:
            settings = GenerationSettings.model_validate(values)
            settings.params()
        except Exception as error:  # pydantic's ValidationError, ConfigError, ValueError
            raise ValueError(_one_line(error)) from None
        self.settings = settings
        return settings

    def describe_settings(self) -> str:
        """The settings, with the base seed (turn i of the conversation uses seed + i)."""
        shown = ", ".join(f"{k}={v}" for k, v in _params_dict(self.settings.params()).items())
        return f"preset={self.settings.preset}: {shown}"

    # -- saving
    def as_dict(self) -> dict[str, Any]:
        models = []
        for index, model in enumerate(self.models):
            models.append(
                {
                    "model": asdict(model.info),
                    "messages": self.history(index),
                    "turns": [
                        {
                            "index": number,
                            "user": turn.user,
                            "assistant": turn.answers[index].text,
                            **{k: v for k, v in asdict(turn.answers[index]).items() if k != "text"},
                            "tokens_per_s": turn.answers[index].tokens_per_s,
                            "seed": turn.params.get("seed"),
                        }
                        for number, turn in enumerate(self.turns)
                    ],
                }
            )
        return {
            "alloylm_chat": CHAT_VERSION,
            "created": self.started,
            "saved": _now(),
            "system": self.system,
            "settings": {
                **self.settings.model_dump(),
                "params": _params_dict(self.settings.params()),
            },
            "models": models,
            "turns": [
                {
                    "index": number,
                    "user": turn.user,
                    "system": turn.system,
                    "params": turn.params,
                    "answers": {
                        model.info.name: turn.answers[index].text
                        for index, model in enumerate(self.models)
                    },
                }
                for number, turn in enumerate(self.turns)
            ],
        }

    def markdown(self) -> str:
        data = self.as_dict()
        lines = [f"# Chat: {', '.join(self.names)}", ""]
        for entry in data["models"]:
            model = entry["model"]
            identity = (
                f"lineage `{model['lineage']}`"
                if model.get("lineage")
                else f"model files sha256 `{model['model_hash']}`"
                if model.get("model_hash")
                else "no lineage"
            )
            lines.append(f"- **{model['name']}**: `{model['source']}` ({identity})")
        lines += [f"- settings: {self.describe_settings()}", f"- started {data['created']}", ""]
        last_system: str | None = None
        for number, turn in enumerate(self.turns):
            if turn.system and turn.system != last_system:
                lines += ["## System", "", turn.system.strip(), ""]
            last_system = turn.system
            lines += [f"## Turn {number + 1}", "", "**You**", "", turn.user.strip(), ""]
            for model, answer in zip(self.models, turn.answers, strict=True):
                lines += [
                    f"**{model.info.name}**",
                    "",
                    answer.text.strip() or "*(empty reply)*",
                    "",
                ]
                lines += [
                    f"*{answer.completion_tokens} tokens in {answer.seconds} s, "
                    f"finish: {answer.finish_reason}; "
                    + ", ".join(f"{k} {v}" for k, v in turn.params.items())
                    + "*",
                    "",
                ]
        return "\n".join(lines)

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write PATH.md and PATH.json (a .md or .json suffix on PATH is dropped first)."""
        from alloylm.atomic import atomic_write_json, atomic_write_text

        base = Path(path).expanduser()
        if base.suffix in (".md", ".json"):
            base = base.with_suffix("")
        markdown, data = base.with_name(base.name + ".md"), base.with_name(base.name + ".json")
        atomic_write_text(markdown, self.markdown() + "\n")
        atomic_write_json(data, self.as_dict())
        return markdown, data


def _parse_value(key: str, raw: str) -> Any:
    if key == "seed" and raw.lower() in ("none", "off", "random"):
        return None
    try:
        return int(raw) if key in ("top_k", "max_new_tokens", "seed") else float(raw)
    except ValueError:
        kind = "an integer" if key in ("top_k", "max_new_tokens", "seed") else "a number"
        raise ValueError(f"{key}={raw!r}: expected {kind}") from None


def _one_line(error: BaseException) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):  # pydantic: the field and its message
        try:
            first = errors()[0]
            return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        except (IndexError, KeyError, TypeError):
            pass
    render = getattr(error, "render", None)
    return render() if callable(render) else str(error).splitlines()[0]


def _params_dict(params: SamplingParams) -> dict[str, Any]:
    keep = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed")
    return {name: getattr(params, name) for name in keep}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---------------------------------------------------------------- layout
def choose_layout(models: int, width: int, requested: str = "auto") -> str:
    """'columns' when several models fit side by side (MIN_COLUMN_WIDTH each), else 'stacked'."""
    if requested in ("columns", "stacked"):
        return requested
    if models > 1 and width >= models * MIN_COLUMN_WIDTH + (models - 1) * 3:
        return "columns"
    return "stacked"


# ---------------------------------------------------------------- the terminal loop
class TerminalChat:
    """Reads turns and commands from the terminal and shows the answers as they stream."""

    def __init__(
        self,
        session: ChatSession,
        *,
        layout: str = "auto",
        out: TextIO | None = None,
        read: Callable[[str], str] = input,
    ) -> None:
        self.session = session
        self.requested_layout = layout
        self.out = out or sys.stdout
        self.read = read

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def run(self) -> int:
        with contextlib.suppress(ImportError):  # not on every platform
            import readline  # noqa: F401 - line editing and history for input()
        names = ", ".join(self.session.names)
        self.say(f"chatting with {names}; {self.session.describe_settings()}")
        self.say("type a message, or /help for commands; Ctrl-D to leave")
        while True:
            try:
                line = self.read("you> ")
            except (EOFError, KeyboardInterrupt):
                self.say()
                self.say("bye")
                return 0
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if self.command(line) == "quit":
                    self.say("bye")
                    return 0
                continue
            self.turn(line)

    # -- commands
    def command(self, line: str) -> str | None:
        name, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        name = name.lower()
        if name in ("quit", "exit", "q"):
            return "quit"
        if name in ("help", "h", "?"):
            self.say(HELP)
        elif name == "system":
            if not rest:
                shown = self.session.system if self.session.system else "(none)"
                self.say(f"system prompt: {shown}")
            else:
                self.session.set_system(None if rest.lower() == "none" else rest)
                self.say(
                    "system prompt removed"
                    if self.session.system is None
                    else "system prompt set for the next turns"
                )
        elif name == "set":
            if rest:
                try:
                    self.session.update_settings(rest.split())
                except ValueError as error:
                    self.say(f"not changed: {error}")
                    return None
            self.say(f"settings: {self.session.describe_settings()}")
        elif name == "reset":
            self.session.reset()
            self.say("conversation reset (system prompt and settings kept)")
        elif name == "save":
            if not rest:
                self.say("usage: /save PATH (writes PATH.md and PATH.json)")
                return None
            try:
                markdown, data = self.session.save(rest)
            except OSError as error:
                self.say(f"not saved: {error.strerror or error} ({error.filename or rest})")
                return None
            self.say(f"saved {markdown} and {data}")
        else:
            self.say(f"unknown command /{name}; /help lists them")
        return None

    # -- one turn
    def turn(self, text: str) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        layout = choose_layout(len(self.session.models), width, self.requested_layout)
        try:
            if layout == "columns":
                self._columns(text, width)
            else:
                self._stacked(text)
        except KeyboardInterrupt:
            self.say()
            self.say("(interrupted: this turn is dropped)")
        except ChatError as error:
            self.say()
            self.say(f"not answered: {error}")

    def _stacked(self, text: str) -> None:
        names = self.session.names
        labelled = len(names) > 1

        def start(index: int) -> None:
            if labelled:
                self.out.write(f"\n[{names[index]}]\n")
            self.out.flush()

        def delta(index: int, piece: str) -> None:
            self.out.write(piece)
            self.out.flush()

        def done(index: int, answer: Answer) -> None:
            self.out.write("\n" + _stats(answer) + "\n")
            self.out.flush()

        self.session.ask(text, concurrent=False, on_start=start, on_delta=delta, on_done=done)
        self.say()

    def _columns(self, text: str, width: int) -> None:
        """All models at once, one column each. While they stream, a live view shows the tail
        of every answer that fits the screen (a redraw taller than the screen would leave
        copies behind); when all are done it is replaced by the whole answers, printed once."""
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self.out, width=width, emoji=False, highlight=False)
        count = len(self.session.models)
        texts = [""] * count
        footers = [""] * count
        height = shutil.get_terminal_size((width, 24)).lines
        visible_lines = max(3, height - 6)  # names, statistics, the prompt
        column_width = max(8, (width - 2 * count) // count)

        def preview() -> Any:
            tails = [tail_lines(t, column_width, visible_lines) for t in texts]
            return _columns_table(self.session.names, tails, footers)

        with Live(preview(), console=console, auto_refresh=False, transient=True) as live:
            last = [0.0]

            def delta(index: int, piece: str) -> None:
                texts[index] += piece
                now = time.monotonic()
                if now - last[0] > 0.05:  # at most 20 redraws a second
                    live.update(preview(), refresh=True)
                    last[0] = now

            def done(index: int, answer: Answer) -> None:
                texts[index] = answer.text
                footers[index] = _stats(answer)
                live.update(preview(), refresh=True)

            self.session.ask(text, concurrent=True, on_delta=delta, on_done=done)
        console.print(_columns_table(self.session.names, texts, footers))


def tail_lines(text: str, width: int, lines: int) -> str:
    """The last `lines` lines of `text` wrapped at `width` (long words broken)."""
    import textwrap

    wrapped: list[str] = []
    for paragraph in text.split("\n"):
        wrapped += textwrap.wrap(paragraph, width, replace_whitespace=False) or [""]
    return "\n".join(wrapped[-lines:])


def _columns_table(names: Sequence[str], texts: Sequence[str], footers: Sequence[str]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(expand=True, show_lines=False, box=None, padding=(0, 1))
    for name in names:
        table.add_column(Text(name, style="bold"), overflow="fold", ratio=1)
    table.add_row(*(Text(t) for t in texts))
    table.add_row(*(Text(f, style="dim") for f in footers))
    return table


def _stats(answer: Answer) -> str:
    rate = f", {answer.tokens_per_s} tok/s" if answer.tokens_per_s else ""
    first = f", first token {answer.first_token_s} s" if answer.first_token_s is not None else ""
    return f"({answer.completion_tokens} tokens, {answer.seconds} s{rate}{first}, {answer.finish_reason})"


def load_chat_models(
    sources: Iterable[tuple[str, Path]],
    *,
    names: Sequence[str] | None = None,
    dtype: str | None = None,
    threads: int | None = None,
) -> list[ChatModel]:
    """A ModelGenerator and its description (name, lineage) for each (source, folder).

    A model is named as its source was written (or by `names`); a repeated one gets (2), (3).
    """
    from dataclasses import replace

    from alloylm.chat.conversations import describe_model
    from alloylm.generation.batching import ModelGenerator

    sources = list(sources)
    wanted = list(names) if names else [source for source, _ in sources]
    models = []
    for name, (source, folder) in zip(distinct(wanted), sources, strict=True):
        info = replace(describe_model(source, folder), name=name)
        generator = ModelGenerator(folder, max_batch=1, dtype=dtype, threads=threads)
        models.append(ChatModel(info, generator))
    return models


def distinct(names: Sequence[str]) -> list[str]:
    """The names, a repeated one suffixed (2), (3) ..."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return result
