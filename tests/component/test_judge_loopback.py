"""The judge against a loopback judge: a scripted fake OpenAI-compatible server (stdlib
http.server in a thread) that returns fixed verdicts and counts the calls it gets."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alloylm.chat.judge import (
    Judge,
    JudgeSettings,
    judge_teacher_config,
    load_transcripts,
    load_votes,
    run_judge,
)
from alloylm.cli.main import main
from alloylm.distill.cache import CallCache
from alloylm.distill.engine import make_teacher

GOOD = {"depth_of_reasoning": 10, "creativity": 9, "clarity": 10, "quantitative_predictions": 9}
FAIR = {"depth_of_reasoning": 9, "creativity": 8, "clarity": 9, "quantitative_predictions": 7}


class FakeJudge:
    """Grades GOOD (38/40) when the transcript's answers say GOOD, else FAIR (33/40); a pairwise
    prompt is won by the conversation that says GOOD, or, when `biased`, always by A. The first
    `garbage` replies are not JSON."""

    def __init__(self) -> None:
        self.calls = 0
        self.biased = False
        self.garbage = 0
        self.lock = threading.Lock()

    def reply(self, prompt: str) -> str:
        with self.lock:
            self.calls += 1
            if self.garbage > 0:
                self.garbage -= 1
                return "I would rather not say."
        if "Conversation with Assistant A" in prompt:
            if self.biased:
                return '{"winner": "A", "reason": "first is best"}'
            a_part, b_part = prompt.split("Conversation with Assistant B")
            winner = "A" if "GOOD" in a_part.split("Conversation with Assistant A")[1] else "B"
            if "GOOD" not in a_part and "GOOD" not in b_part:
                winner = "tie"
            return "Verdict:\n```json\n" + json.dumps({"winner": winner, "reason": "x"}) + "\n```"
        scores = GOOD if "GOOD" in prompt else FAIR
        return "Here are my grades: " + json.dumps({**scores, "rationale": "fine"})


@pytest.fixture()
def fake_judge() -> Iterator[tuple[str, FakeJudge]]:
    judge = FakeJudge()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = "\n".join(m["content"] for m in body["messages"])
            text = judge.reply(prompt)
            data = json.dumps(
                {
                    "choices": [{"message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", judge
    server.shutdown()
    server.server_close()


def _transcript(folder: Path, model: str, answer: str) -> Path:
    path = folder / f"{model}.json"
    messages = [
        {"role": "system", "content": "You are a materials scientist."},
        {"role": "user", "content": "How do collagen and leaves relate?"},
        {"role": "assistant", "content": answer},
    ]
    record = {
        "model": {"name": model, "source": model, "lineage": f"{model}@000000000000"},
        "script": {"name": "collagen_leaves", "sha256": "ab" * 32},
        "messages": messages,
    }
    path.write_text(json.dumps(record))
    return path


@pytest.fixture()
def transcripts(tmp_path: Path) -> Path:
    folder = tmp_path / "transcripts"
    folder.mkdir()
    _transcript(folder, "good", "GOOD: both are hierarchical fibre composites, 1.2 GPa.")
    _transcript(folder, "fair", "They are both made of stuff.")
    _transcript(folder, "other", "Also stuff.")
    (folder / "summary.json").write_text("{}")  # converse's summary is not a transcript
    return folder


def _judge(url: str, cache: CallCache, **settings: object) -> Judge:
    teacher = make_teacher(judge_teacher_config(url, model="fake-gpt-4o", max_retries=0))
    return Judge(teacher, cache, JudgeSettings(**settings), max_retries=0)


def test_single_grading_gives_table3_and_an_unchanged_rerun_makes_no_call(
    fake_judge, transcripts, tmp_path
):
    url, server = fake_judge
    refs = load_transcripts([transcripts])
    assert sorted(r.label for r in refs) == ["fair", "good", "other"]
    cache = CallCache(tmp_path / "cache.sqlite")
    results = run_judge(refs, _judge(url, cache, samples=2, resamples=50), tmp_path / "out")
    assert server.calls == 3 * 2 and results["calls"]["made"] == 6
    (rows,) = results["single"]["table3"].values()
    by_model = {row["model"]: row for row in rows}
    # the study's arithmetic: 38/40 -> average 9.5 -> 10.0; 33/40 -> 8.25 -> 8.25/9.5*10 = 8.7
    assert by_model["good"]["total"] == 38 and by_model["good"]["average"] == 9.5
    assert by_model["good"]["intelligence_score"] == 10.0
    assert by_model["fair"]["total"] == 33 and by_model["fair"]["intelligence_score"] == 8.7
    assert by_model["fair"]["samples"] == 2 and by_model["fair"]["total_sd"] == 0.0
    assert rows[0]["model"] == "good"
    table = (tmp_path / "out" / "judge.md").read_text()
    assert "| good | 10.0 | 9.0 | 10.0 | 9.0 | 38.0/40 | 9.5 | 10.0 |" in table

    again = run_judge(refs, _judge(url, cache, samples=2, resamples=50), tmp_path / "out2")
    assert server.calls == 6  # zero new calls
    assert again["calls"]["made"] == 0 and again["calls"]["cached"] == 6
    assert again["single"]["table3"] == results["single"]["table3"]
    # a third sample is a new call for each transcript; the first two stay cached
    more = run_judge(refs, _judge(url, cache, samples=3, resamples=50), tmp_path / "out3")
    assert more["calls"]["made"] == 3 and server.calls == 9
    cache.close()


def test_unparsable_replies_are_retried_then_counted(fake_judge, transcripts, tmp_path):
    url, server = fake_judge
    refs = load_transcripts([transcripts / "good.json"])
    cache = CallCache(tmp_path / "cache.sqlite")
    server.garbage = 1  # the first reply is prose: asked again, then parsed
    results = run_judge(refs, _judge(url, cache, samples=1, parse_retries=2), tmp_path / "out")
    assert server.calls == 2 and results["calls"]["parse_retries"] == 1
    assert results["calls"]["failed"] == {}
    server.garbage = 100  # never parses: 1 + 2 retries, then counted, never raised
    cache2 = CallCache(tmp_path / "cache2.sqlite")
    results = run_judge(refs, _judge(url, cache2, samples=1, parse_retries=2), tmp_path / "out2")
    assert server.calls == 2 + 3
    assert results["calls"]["failed"] == {"unparsable_judge_single": 1}
    (rows,) = results["single"]["table3"].values()
    assert rows[0]["samples"] == 0 and rows[0]["intelligence_score"] is None
    cache.close()
    cache2.close()


def test_pairwise_both_orders_counts_inconsistent_verdicts(fake_judge, transcripts, tmp_path):
    url, server = fake_judge
    refs = load_transcripts([transcripts / "good.json", transcripts / "fair.json"])
    cache = CallCache(tmp_path / "cache.sqlite")
    results = run_judge(
        refs, _judge(url, cache, mode="pairwise", samples=1, resamples=100), tmp_path / "out"
    )
    pairwise = results["pairwise"]
    assert server.calls == 2  # one pair, both orders
    assert pairwise["judged_both_orders"] == 1 and pairwise["inconsistent"] == 0
    ratings = pairwise["ratings"]["judge"]
    assert [r["model"] for r in ratings] == ["good", "fair"] and ratings[0]["wins"] == 2
    # judge.json records every setting that changes its numbers (issue 23): resamples and prior
    written = json.loads((tmp_path / "out" / "judge.json").read_text())
    assert written["settings"]["resamples"] == 100 and written["settings"]["prior"] == 0.5
    assert "cluster bootstrap" in written["settings"]["interval"]
    # A position-biased judge (always "A") contradicts itself when the order is swapped
    server.biased = True
    cache2 = CallCache(tmp_path / "cache2.sqlite")
    results = run_judge(
        refs, _judge(url, cache2, mode="pairwise", samples=2, resamples=100), tmp_path / "out2"
    )
    assert (
        results["pairwise"]["inconsistent"] == 2 and results["pairwise"]["judged_both_orders"] == 2
    )
    ratings = results["pairwise"]["ratings"]["judge"]
    assert ratings[0]["rating"] == ratings[1]["rating"] == 1000.0  # 2 wins each: no signal
    cache.close()
    cache2.close()


def test_human_votes_join_the_bradley_terry_ratings(fake_judge, transcripts, tmp_path):
    url, _ = fake_judge
    votes_file = tmp_path / "votes.jsonl"
    votes_file.write_text(
        "\n".join(
            json.dumps(v)
            for v in [
                {"a": "fair", "b": "good", "winner": "b"},
                {"a": "good", "b": "fair", "winner": "tie"},
                {"a": "good", "b": "other", "winner": "both_bad", "extra": "kept out"},
            ]
        )
        + "\n"
    )
    votes = load_votes(votes_file)
    assert votes == [("fair", "good", "b"), ("good", "fair", "tie"), ("good", "other", "both_bad")]
    refs = load_transcripts([transcripts / "good.json", transcripts / "fair.json"])
    cache = CallCache(tmp_path / "cache.sqlite")
    results = run_judge(
        refs, _judge(url, cache, mode="pairwise", samples=1, resamples=50), tmp_path / "out",
        votes=votes,
    )  # fmt: skip
    ratings = results["pairwise"]["ratings"]
    assert (
        set(ratings) == {"judge", "human", "combined"} and results["pairwise"]["human_votes"] == 3
    )
    assert {r["model"] for r in ratings["human"]} == {"good", "fair", "other"}
    assert ratings["combined"][0]["model"] == "good"
    cache.close()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": "x", "b": "y", "winner": "draw"}\n')
    from alloylm.errors import DataError

    with pytest.raises(DataError, match="bad.jsonl:1"):
        load_votes(bad)


def test_cli_judge_against_the_endpoint(fake_judge, transcripts, tmp_path, capsys):
    url, server = fake_judge
    out = tmp_path / "judged"
    argv = ["judge", str(transcripts), "--judge", url, "--judge-model", "fake", "-o", str(out),
            "--samples", "1", "--mode", "both", "--resamples", "20"]  # fmt: skip
    assert main(argv) == 0
    calls = server.calls
    assert calls == 3 + 3 * 2  # 3 grades, 3 pairs in both orders
    printed = capsys.readouterr().out
    assert "Table 3 form" in printed and "Bradley-Terry (judge)" in printed
    assert main(argv) == 0 and server.calls == calls  # cached in OUT/judge-cache.sqlite
    assert (
        main(["judge", str(transcripts), "--judge", url, "-o", str(out)]) == 2
    )  # no --judge-model
    assert "--judge-model" in capsys.readouterr().err


def test_a_saved_chat_gives_one_transcript_per_model_compared_with_each_other(fake_judge, tmp_path):
    url, server = fake_judge
    user = {"role": "user", "content": "How do collagen and leaves relate?"}

    def entry(name: str, answer: str) -> dict:
        return {
            "model": {"name": name, "source": name, "lineage": None, "model_hash": "f" * 64},
            "messages": [user, {"role": "assistant", "content": answer}],
        }

    chat = tmp_path / "chat.json"
    chat.write_text(
        json.dumps({"alloylm_chat": 1, "models": [entry("good", "GOOD"), entry("fair", "meh")]})
    )
    refs = load_transcripts([chat])
    assert [(r.label, r.script) for r in refs] == [("good", "chat:chat"), ("fair", "chat:chat")]
    cache = CallCache(tmp_path / "cache.sqlite")
    results = run_judge(
        refs, _judge(url, cache, mode="pairwise", samples=1, resamples=20), tmp_path / "out"
    )
    assert server.calls == 2 and results["pairwise"]["ratings"]["judge"][0]["model"] == "good"
    cache.close()
    (tmp_path / "empty.json").write_text(json.dumps({"messages": [user]}))
    from alloylm.errors import DataError

    with pytest.raises(DataError, match="no conversation"):
        load_transcripts([tmp_path / "empty.json"])


def test_an_edited_template_is_a_new_call(fake_judge, transcripts, tmp_path):
    from alloylm.chat.judge import BUILTIN_PROMPTS

    url, server = fake_judge
    refs = load_transcripts([transcripts / "good.json"])
    cache = CallCache(tmp_path / "cache.sqlite")
    teacher = make_teacher(judge_teacher_config(url, model="fake", max_retries=0))
    settings = JudgeSettings(samples=1)
    first = run_judge(refs, Judge(teacher, cache, settings), tmp_path / "a")
    assert server.calls == 1
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    source = (BUILTIN_PROMPTS / "judge_single.j2").read_text()
    (prompts / "judge_single.j2").write_text(source.replace("impartial expert", "strict"))
    edited = run_judge(refs, Judge(teacher, cache, settings, prompts_dir=prompts), tmp_path / "b")
    assert server.calls == 2 and edited["calls"]["made"] == 1
    assert edited["templates"]["judge_single"] != first["templates"]["judge_single"]
    assert edited["templates"]["rubric"] == first["templates"]["rubric"]  # the built-in
    cache.close()
