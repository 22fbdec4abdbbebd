"""`alloy chat MODEL [MODEL ...]`: a multi-turn terminal chat, streamed, side by side.

Every turn is answered by each model (each keeps its own history): in columns on a wide terminal,
one after another on a narrow one. /help inside the chat lists the commands (/system, /set,
/reset, /save, /quit).
"""

from __future__ import annotations

import argparse

SAMPLING_OPTIONS = ("seed", "max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="model sources: embedded:smollm2-135m-instruct, tiny:llama, a folder, a hub id",
    )
    parser.add_argument(
        "--name", action="append", default=None, help="display name, once per MODEL, in order"
    )
    parser.add_argument("--system", default=None, help="system prompt (change it with /system)")
    parser.add_argument(
        "--preset",
        default="study",
        help="sampling preset: study (the study's conversation settings, the default) or greedy",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="turn i uses seed + i (default: fresh each time)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--repetition-penalty", type=float, default=None)
    parser.add_argument(
        "--layout",
        choices=("auto", "columns", "stacked"),
        default="auto",
        help="auto: columns when the terminal is wide enough for every model, else stacked",
    )
    parser.add_argument(
        "--dtype", default=None, help="e.g. bfloat16 on a GPU (default: the model's)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from alloylm.chat.conversations import GenerationSettings
    from alloylm.chat.repl import ChatSession, TerminalChat, load_chat_models
    from alloylm.errors import ConfigError
    from alloylm.models.sources import resolve_model

    if args.name is not None and len(args.name) != len(args.models):
        raise ConfigError(
            f"{len(args.name)} --name for {len(args.models)} models",
            key="--name",
            hint="give one --name per MODEL, in the same order, or none",
        )
    values = {"preset": args.preset, **{k: getattr(args, k) for k in SAMPLING_OPTIONS}}
    try:
        settings = GenerationSettings.model_validate(values)
        settings.params()
    except (ValidationError, ValueError) as error:
        raise ConfigError(f"bad sampling option: {error}", key="--sampling") from None
    sources = [(source, resolve_model(source)) for source in args.models]
    print(f"loading {', '.join(args.models)} ...", flush=True)
    models = load_chat_models(sources, names=args.name, dtype=args.dtype, threads=args.threads)
    session = ChatSession(models, settings=settings, system=args.system)
    try:
        return TerminalChat(session, layout=args.layout).run()
    finally:
        for model in models:
            model.generator.close()
