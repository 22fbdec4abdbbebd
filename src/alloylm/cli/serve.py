"""`alloy serve MODEL [MODEL ...]`: an OpenAI-compatible endpoint (loopback by default).

`--ui` adds the side-by-side chat page (chat/webui.py) at /ui/, `--blind` hides the names.
"""

from __future__ import annotations

import argparse
import os

API_KEY_VARIABLE = "ALLOY_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="model sources: embedded:smollm2-135m-instruct, tiny:llama, a folder, a .gguf, a hub id",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default: loopback only; any other needs an API key)",
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--name",
        action="append",
        default=None,
        help="model name reported by /v1/models and expected in requests, once per MODEL "
        "(default: the source as written)",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_VARIABLE} when set)",
    )
    parser.add_argument(
        "--max-batch", type=int, default=8, help="sequences generated together, per model"
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="requests that may wait for a batch slot; beyond it the answer is 503 + Retry-After",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=256, help="default max_tokens when a request gives none"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (1 is often fastest on a busy CPU)",
    )
    parser.add_argument(
        "--ui",
        action="store_true",
        help="also serve the side-by-side chat page at /ui/ (2 to 4 models; votes saved)",
    )
    parser.add_argument(
        "--blind", action="store_true", help="with --ui: label the models A, B ... until a vote"
    )
    parser.add_argument(
        "--votes",
        default=None,
        help="with --ui: JSONL file the votes are appended to (default: ./alloy-votes.jsonl)",
    )


def run(args: argparse.Namespace) -> int:
    from alloylm.chat.serve import is_loopback, start_server
    from alloylm.errors import ConfigError
    from alloylm.models.sources import resolve_model

    names = args.name or list(args.models)
    if len(names) != len(args.models):
        raise ConfigError(
            f"{len(names)} --name for {len(args.models)} models",
            key="--name",
            hint="give one --name per MODEL, in the same order, or none",
        )
    if len(set(names)) != len(names):
        raise ConfigError("two models share a name", key="--name", hint="names must be unique")
    api_key = args.api_key or os.environ.get(API_KEY_VARIABLE) or None
    if not is_loopback(args.host) and not api_key:  # before any model loads
        raise ConfigError(
            f"refusing to serve on {args.host!r} without an API key",
            key="--host",
            hint=f"pass --api-key KEY or set {API_KEY_VARIABLE}, or bind 127.0.0.1",
        )
    if (args.blind or args.votes) and not args.ui:
        raise ConfigError("--blind and --votes belong to the page", key="--ui", hint="add --ui")
    page = None
    if args.ui:  # checked before any model loads
        from alloylm.chat.webui import DEFAULT_VOTES_FILE, SideBySidePage

        page = SideBySidePage(
            names,
            blind=args.blind,
            votes_file=args.votes or DEFAULT_VOTES_FILE,
            max_tokens=args.max_tokens,
        )
    folders = {name: resolve_model(source) for name, source in zip(names, args.models, strict=True)}
    server, thread = start_server(
        folders,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        default_max_tokens=args.max_tokens,
        threads=args.threads,
        api_key=api_key,
    )
    server.ui = page
    host, port = server.server_address[:2]
    print(f"serving {', '.join(names)} at http://{host}:{port}/v1", flush=True)
    if page is not None:
        key_note = " (the page asks for the API key)" if api_key else ""
        print(f"side-by-side page: http://{host}:{port}/ui/{key_note}", flush=True)
        print(f"votes are appended to {page.votes_file}", flush=True)
    print(
        f"API key: {'required' if api_key else 'none (loopback only)'}; Ctrl-C to stop", flush=True
    )
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
    return 0
