"""`alloy serve` on loopback with tiny:llama, and a real distillation through it (OpenAI teacher)."""

from __future__ import annotations

import argparse
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from alloylm.chat.serve import start_server
from alloylm.cli import distill as distill_cli
from alloylm.contract import StageContext
from alloylm.distill.config import TeacherConfig
from alloylm.distill.engine import run_distill
from alloylm.stages.distill import Config, run


@pytest.fixture(scope="module")
def served(tiny_llama: Path) -> Iterator[str]:
    threads = torch.get_num_threads()
    server, _ = start_server(tiny_llama, model_name="tiny", default_max_tokens=8, threads=1)
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    torch.set_num_threads(threads)


def _post(url: str, body: dict) -> bytes:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def test_openai_routes(served: str) -> None:
    with urllib.request.urlopen(f"{served}/models", timeout=10) as response:
        assert json.loads(response.read())["data"][0]["id"] == "tiny"
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "What is bone?"}],
        "max_tokens": 5,
    }
    reply = json.loads(_post(f"{served}/chat/completions", body))
    assert reply["object"] == "chat.completion" and isinstance(
        reply["choices"][0]["message"]["content"], str
    )
    assert reply["usage"]["completion_tokens"] <= 5 and reply["usage"]["prompt_tokens"] > 5
    # Greedy decoding is deterministic.
    assert (
        json.loads(_post(f"{served}/chat/completions", body))["choices"][0]["message"]
        == reply["choices"][0]["message"]
    )
    events = _post(f"{served}/chat/completions", {**body, "stream": True}).decode().split("\n\n")
    assert events[0].startswith("data: ") and "data: [DONE]" in events
    chunks = [json.loads(e[6:]) for e in events if e.startswith("data: {")]
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == reply["choices"][0]["message"]["content"]  # token deltas, same answer
    with pytest.raises(urllib.error.HTTPError) as error:
        _post(f"{served}/chat/completions", {"messages": [{"role": "robot", "content": "x"}]})
    assert error.value.code == 400


def _corpus_config(data_root: Path, base_url: str, **extra: object) -> Config:
    return Config(
        kind="distill",
        paths=[str(data_root / "openstax_corpus" / "anatomy_physiology_2e.jsonl")],
        max_documents=1,
        max_chunks=3,
        chunking={"max_tokens": 64, "overlap": 8},
        teacher={
            "type": "openai",
            "base_url": base_url,
            "model": "tiny",
            "max_tokens": 16,
            "concurrency": 3,
            "temperature": 1.0,
        },
        generators=["summary", "qa"],
        parse_retries=0,
        **extra,
    )


def test_distill_stage_through_the_server_then_rerun_makes_no_call(
    served: str, data_root: Path, tmp_path: Path
) -> None:
    cfg = _corpus_config(data_root, served)
    ctx = StageContext("distill", "t", 42, tmp_path / "work", tmp_path / "state", tmp_path)
    result = run(ctx, cfg)
    stats = result.details["distill"]
    # A random tiny model (sampled, so it writes words) writes no "Q:/A:" pairs: qa units fail and are
    # counted; summaries of enough words are done. Every unit is accounted for.
    units = stats["units"]
    assert sum(units["summary"].values()) == 3 and units["summary"].get("done", 0) >= 1
    assert units["qa"] == {"failed": 3} and stats["rejects"]["qa:no_qa_pairs"] == 3
    assert stats["records_per_generator"]["summary"] == units["summary"]["done"]
    assert stats["teacher"]["calls_made"] == 6 and stats["teacher"]["completion_tokens"] > 0
    assert result.outputs["text"] == "cpt.jsonl"
    lines = [
        json.loads(line) for line in (tmp_path / "work" / "cpt.jsonl").read_text().splitlines()
    ]
    summaries = [line for line in lines if line["source"]["generator"] == "summary"]
    assert {s["source"]["chunk"] for s in summaries} <= {"m45981#0", "m45981#1", "m45981#2"}
    assert lines[0]["source"]["generator"] == "raw"
    assert result.metrics["teacher_calls"] == 6
    # Unchanged rerun: zero calls, same files.
    ctx2 = StageContext("distill", "t", 42, tmp_path / "work2", tmp_path / "state", tmp_path)
    again = run(ctx2, cfg)
    assert again.details["distill"]["teacher"] == {
        **stats["teacher"],
        "calls_made": 0,
        "cache_hits": 6,
        "prompt_tokens": 0,
        "completion_tokens": 0,
    }
    assert (tmp_path / "work2" / "cpt.jsonl").read_text() == (
        tmp_path / "work" / "cpt.jsonl"
    ).read_text()


def test_cli_run_and_stats(
    served: str, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "distill.yaml"
    config.write_text(
        "paths: ['${data}/openstax_corpus/anatomy_physiology_2e.jsonl']\n"
        "max_documents: 1\nmax_chunks: 2\nraw_text: false\nparse_retries: 0\nchunking: {max_tokens: 64, overlap: 8}\n"
        f"teacher: {{type: openai, base_url: '{served}', model: tiny, max_tokens: 16, temperature: 1.0}}\n"
        "generators: [summary]\n"
    )
    parser = argparse.ArgumentParser()
    distill_cli.add_arguments(parser)
    assert (
        distill_cli.run(parser.parse_args(["run", str(config), "--out", str(tmp_path / "out")]))
        == 0
    )
    assert (tmp_path / "out" / "cpt.jsonl").is_file() and (
        tmp_path / "out" / ".distill-state" / "distill-cache.sqlite"
    ).is_file()
    capsys.readouterr()
    assert distill_cli.run(parser.parse_args(["stats", str(tmp_path / "out"), "--json"])) == 0
    stats = json.loads(capsys.readouterr().out)
    assert sum(stats["units"]["summary"].values()) == 2 and stats["teacher"]["calls_made"] == 2
    assert (
        distill_cli.run(parser.parse_args(["stats", str(tmp_path / "out" / ".distill-state")])) == 0
    )
    table = capsys.readouterr().out
    assert "summary" in table and "tokens spent" in table


def test_local_teacher_runs_in_process(tiny_llama: Path, data_root: Path, tmp_path: Path) -> None:
    teacher = TeacherConfig(
        type="local", model=str(tiny_llama), max_tokens=16, concurrency=2, temperature=1.0
    )
    cfg = _corpus_config(data_root, "unused").model_copy(
        update={"teacher": teacher, "generators": ["summary"], "max_chunks": 2}
    )
    stats = run_distill(cfg, tmp_path / "out", tmp_path / "state", log=lambda m: None).stats
    assert sum(stats["units"]["summary"].values()) == 2 and stats["teacher"]["calls_made"] == 2
    assert stats["teacher"]["identity"] == f"local:{tiny_llama}"
    again = run_distill(cfg, tmp_path / "out2", tmp_path / "state", log=lambda m: None).stats
    assert again["teacher"]["calls_made"] == 0 and again["teacher"]["cache_hits"] == 2
