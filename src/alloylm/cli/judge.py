"""`alloy judge TRANSCRIPTS... --judge SOURCE -o DIR`: grade or compare transcripts with an LLM judge.

SOURCE is an OpenAI-compatible endpoint (http://..., with --judge-model and, for a key,
--api-key-env) or a local model source (embedded:..., a folder). Every call is cached in
DIR/judge-cache.sqlite (or --cache): an unchanged rerun makes no call.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "transcripts", nargs="+", help="transcript JSON files or folders (alloy converse -o DIR)"
    )
    parser.add_argument(
        "--judge",
        required=True,
        help="an endpoint URL (http://127.0.0.1:8000/v1) or a model source",
    )
    parser.add_argument("--judge-model", default=None, help="model name at the endpoint (gpt-4o)")
    parser.add_argument(
        "--api-key-env", default=None, help="environment variable holding the endpoint's API key"
    )
    parser.add_argument("-o", "--out", required=True, help="folder for judge.json and judge.md")
    parser.add_argument("--mode", choices=("single", "pairwise", "both"), default="single")
    parser.add_argument("--samples", type=int, default=3, help="judge samples per transcript/order")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--parse-retries", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--votes", default=None, help="human votes JSONL (alloy serve --ui)")
    parser.add_argument("--prompts-dir", default=None, help="your rubric.j2 / judge_*.j2")
    parser.add_argument("--criteria", nargs="+", default=None, help="default: the study's four")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per judge call")
    parser.add_argument(
        "--cache", default=None, help="SQLite cache (default: OUT/judge-cache.sqlite)"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from alloylm.chat.judge import (
        STUDY_CRITERIA,
        Judge,
        JudgeSettings,
        judge_teacher_config,
        load_transcripts,
        load_votes,
        run_judge,
        vote_clusters,
    )
    from alloylm.distill.cache import CallCache
    from alloylm.distill.engine import make_teacher

    settings = JudgeSettings(
        mode=args.mode,
        samples=args.samples,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        parse_retries=args.parse_retries,
        seed=args.seed,
        criteria=tuple(args.criteria or STUDY_CRITERIA),
        resamples=args.resamples,
        concurrency=args.concurrency,
    )
    transcripts = load_transcripts(args.transcripts)
    votes = load_votes(args.votes) if args.votes else []
    teacher_cfg = judge_teacher_config(
        args.judge, model=args.judge_model, api_key_env=args.api_key_env, timeout_s=args.timeout
    )
    out = Path(args.out)
    cache = CallCache(Path(args.cache) if args.cache else out / "judge-cache.sqlite")
    try:
        judge = Judge(make_teacher(teacher_cfg), cache, settings, prompts_dir=args.prompts_dir,
                      timeout_s=args.timeout)  # fmt: skip
        clusters = vote_clusters(args.votes) if args.votes else None
        run_judge(transcripts, judge, out, votes=votes, vote_clusters=clusters, log=print)
    finally:
        cache.close()
    print((out / "judge.md").read_text())
    print(f"written: {out / 'judge.json'}, {out / 'judge.md'}")
    return 0
