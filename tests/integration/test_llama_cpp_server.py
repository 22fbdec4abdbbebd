"""A teacher and a judge that someone else wrote: llama-cpp-python's OpenAI-compatible server
(`python -m llama_cpp.server`, from the side venv .ci/side-venvs.sh builds; LLAMA_CPP_PYTHON)
serves the embedded model exported by `export_gguf`, on loopback.

- `alloy distill run` with an `openai` teacher pointed at it turns the shipped A&P corpus sample
  into Q&A, summaries and preference pairs; replies are parsed and checked, and a rerun makes no
  new call (the SQLite cache).
- `alloy judge` with it as the judge grades two transcripts, single and pairwise; a rerun makes
  no new call.
- Errors a real server gives: an unknown model name, a wrong path.

Skipped without the side venv, failed instead under ALLOY_REQUIRE_EQUIVALENCE=1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from alloylm.cli.main import main
from alloylm.models.export_gguf import export_gguf

REPO = Path(__file__).resolve().parents[2]
LLAMA_CPP_PYTHON = os.environ.get(
    "LLAMA_CPP_PYTHON", str(REPO / ".ci-venvs" / "llamacpp" / "bin" / "python")
)
REQUIRED = os.environ.get("ALLOY_REQUIRE_EQUIVALENCE") == "1"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def start_llama_cpp_server(gguf: Path, alias: str) -> tuple[subprocess.Popen, str]:
    """The server on a free loopback port; its log goes to a file beside the model (a pipe
    would fill up with llama.cpp's load log and stop the server before it listens)."""
    if not Path(LLAMA_CPP_PYTHON).exists():
        message = f"llama-cpp-python's venv not found at {LLAMA_CPP_PYTHON} (run .ci/side-venvs.sh)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [LLAMA_CPP_PYTHON, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias,
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "2"],
        stdout=subprocess.DEVNULL,
        stderr=(gguf.parent / "llama-server.log").open("wb"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (gguf.parent / "llama-server.log").read_text(errors="replace")
            pytest.fail(f"llama.cpp's server stopped: {log[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                models = json.loads(response.read())
            assert models["data"][0]["id"] == alias
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    pytest.fail("llama.cpp's server did not answer within 180 s")


@pytest.fixture(scope="module")
def server(embedded_model: Path, tmp_path_factory) -> Iterator[str]:
    gguf = tmp_path_factory.mktemp("gguf") / "smollm2-q8_0.gguf"
    export_gguf(embedded_model, gguf, dtype="q8_0")
    process, url = start_llama_cpp_server(gguf, "smollm2")
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_distill_through_llama_cpp_then_rerun_makes_no_call(server, tmp_path, capsys):
    config = tmp_path / "distill.yaml"
    config.write_text(
        "paths: ['${data}/openstax_corpus/anatomy_physiology_2e.jsonl']\n"
        "max_documents: 1\nmax_chunks: 2\nraw_text: false\nparse_retries: 1\n"
        "chunking: {max_tokens: 128, overlap: 16}\n"
        f"teacher: {{type: openai, base_url: '{server}', model: smollm2, max_tokens: 96,"
        " temperature: 0.0, concurrency: 2}\n"
        "generators: [qa, summary, preference]\n"
    )
    out = tmp_path / "out"
    assert main(["distill", "run", str(config), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["distill", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    units = stats["units"]
    # every unit is accounted for; the 135M model writes summaries it can be asked for
    assert sum(units["summary"].values()) == 2 and units["summary"].get("done", 0) >= 1
    assert sum(units["qa"].values()) == 2 and sum(units["preference"].values()) == 2
    assert stats["teacher"]["calls_made"] >= 6 and stats["teacher"]["completion_tokens"] > 0
    assert not any(
        reason.startswith(("qa:teacher_", "summary:teacher_")) for reason in stats["rejects"]
    )
    first = (out / "cpt.jsonl").read_text()

    # a rerun in place finds every answer in <out>/.distill-state/distill-cache.sqlite
    assert main(["distill", "run", str(config), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["distill", "stats", str(out), "--json"]) == 0
    rerun = json.loads(capsys.readouterr().out)
    assert rerun["teacher"]["calls_made"] == 0
    assert rerun["teacher"]["cache_hits"] == stats["teacher"]["calls_made"]
    assert (out / "cpt.jsonl").read_text() == first


def _transcript(folder: Path, model: str, answer: str) -> None:
    record = {
        "model": {"name": model, "source": model, "lineage": f"{model}@000000000000"},
        "script": {"name": "bone", "sha256": "ab" * 32},
        "messages": [
            {"role": "user", "content": "What is an osteon?"},
            {"role": "assistant", "content": answer},
        ],
    }
    (folder / f"{model}.json").write_text(json.dumps(record))


def test_judge_through_llama_cpp_single_and_pairwise(server, tmp_path, capsys):
    folder = tmp_path / "transcripts"
    folder.mkdir()
    _transcript(folder, "good", "An osteon is the unit of compact bone: rings of lamellae "
                "around a central canal with blood vessels and nerves.")  # fmt: skip
    _transcript(folder, "poor", "It is a kind of fish.")
    out = tmp_path / "judged"
    argv = ["judge", str(folder), "--judge", server, "--judge-model", "smollm2", "-o", str(out),
            "--mode", "both", "--samples", "1", "--max-tokens", "128", "--resamples", "20",
            "--concurrency", "2", "--temperature", "0"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    judged = json.loads((out / "judge.json").read_text())
    made = judged["calls"]["made"]
    assert made >= 2 + 2  # 2 grades, 1 pair in both orders (plus parse retries)
    assert main(argv) == 0
    again = json.loads((out / "judge.json").read_text())
    assert again["calls"]["made"] == 0 and again["calls"]["cached"] >= 4


def test_a_real_servers_errors_name_the_teacher(server, tmp_path):
    from alloylm.distill.teachers import OpenAITeacher, TeacherError

    messages = [{"role": "user", "content": "Hi"}]
    wrong_path = OpenAITeacher(server.removesuffix("/v1"), "smollm2", timeout_s=30)
    with pytest.raises(TeacherError) as caught:
        wrong_path.complete(messages, max_tokens=4, temperature=0)
    assert caught.value.reason == "http_404"
    assert "is base_url the API root" in caught.value.describe(wrong_path.identity)
    # llama-cpp-python serves whatever model it has under any name: an unknown name answers
    reply = OpenAITeacher(server, "no-such-model", timeout_s=60).complete(
        messages, max_tokens=4, temperature=0
    )
    assert reply.completion_tokens >= 1
