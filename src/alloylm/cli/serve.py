"""`alloy serve MODEL --port 8000`: an OpenAI-compatible endpoint for a model source (loopback by default)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="model source: embedded:smollm2-135m-instruct, tiny:llama, a folder, a .gguf, a hub id",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: loopback only)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--name", default=None, help="model name reported by /v1/models (default: the source)"
    )
    parser.add_argument(
        "--max-batch", type=int, default=8, help="concurrent requests generated together"
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


def run(args: argparse.Namespace) -> int:
    from alloylm.chat.serve import start_server
    from alloylm.models.sources import resolve_model

    folder = resolve_model(args.model)
    server, thread = start_server(
        folder,
        host=args.host,
        port=args.port,
        model_name=args.name or args.model,
        max_batch=args.max_batch,
        default_max_tokens=args.max_tokens,
        threads=args.threads,
    )
    host, port = server.server_address[:2]
    print(f"serving {args.model} at http://{host}:{port}/v1 (Ctrl-C to stop)", flush=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
    return 0
