"""The side-by-side page of `alloy serve --ui`, in headless Chromium (Debian's, via playwright).

Two or three tiny random Llamas are served; the page is typed into like a user would, every
column's answer is checked against the model's own greedy answer, votes are cast and read back
from the votes file. No request may leave 127.0.0.1 and the console must stay clean.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package")


@pytest.fixture(scope="module")
def generators(tiny_llama: Path, tiny_llama_other: Path):
    from alloylm.generation.batching import ModelGenerator

    made = {
        "tiny-a": ModelGenerator(tiny_llama, threads=1),
        "tiny-b": ModelGenerator(tiny_llama_other, threads=1),
    }
    yield made
    for generator in made.values():
        generator.close()


def _serve(generators, names, tmp_path, *, blind=False, api_key=None):
    from alloylm.chat.serve import start_server
    from alloylm.chat.webui import SideBySidePage

    served = {name: generators[name.split("#")[0]] for name in names}
    server, _ = start_server({}, generators=served, api_key=api_key, default_max_tokens=16)
    server.ui = SideBySidePage(
        names, blind=blind, votes_file=tmp_path / "votes.jsonl", max_tokens=16
    )
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class Browser:
    """A Chromium page that records every request and every console error."""

    def __init__(self, playwright) -> None:
        self.browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        self.page = self.browser.new_page(viewport={"width": 1280, "height": 900})
        self.requests: list[tuple[str, str, str | None]] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append((r.method, r.url, r.post_data)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def close(self) -> None:
        self.browser.close()


def _alone(generator, messages, **params) -> str:
    """The model's own answer, generated here without the server or the page."""
    from alloylm.generation.sampling import preset

    return generator.complete(messages, preset(**params)).text


def _ask(page, text: str) -> None:
    page.fill("#message", text)
    page.press("#message", "Enter")
    page.wait_for_selector("#vote:not([hidden])", timeout=60_000)


def _columns(page) -> list[dict]:
    return page.eval_on_selector_all(
        ".column",
        """columns => columns.map(c => ({
            slot: c.dataset.slot,
            title: c.querySelector('h2').textContent,
            answers: [...c.querySelectorAll('.message.assistant')].map(m => m.textContent),
            stats: [...c.querySelectorAll('.stats')].map(s => s.textContent),
        }))""",
    )


@pytest.mark.timeout(150)
def test_blind_page_streams_each_column_votes_and_reveals(generators, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    server, base = _serve(generators, ["tiny-a", "tiny-b"], tmp_path, blind=True)
    try:
        with sync_playwright() as playwright:
            browser = Browser(playwright)
            page = browser.page
            page.goto(base + "/")  # redirects to /ui/
            page.wait_for_selector("#chat:not([hidden])")
            assert page.url == base + "/ui/"
            page.click("#settings summary")
            page.select_option("#preset", "study")  # the study's sampling, seeded
            page.fill("#max_tokens", "8")
            page.fill("#seed", "5")
            page.fill("#system", "You are a materials scientist.")
            _ask(page, "How does collagen resemble a leaf?")
            columns = _columns(page)
            assert [c["title"] for c in columns] == ["Model A", "Model B"]  # blind
            assert all(len(c["answers"]) == 1 and c["answers"][0] for c in columns)
            assert all(c["stats"][0].startswith("8 tokens") for c in columns)
            page.click("#vote-buttons button[data-winner='A']")
            page.wait_for_selector("#vote-status:has-text('Vote saved')")
            columns = _columns(page)
            order = [c["title"].split(": ", 1)[1] for c in columns]  # revealed
            assert sorted(order) == ["tiny-a", "tiny-b"]
            history = {}
            for column, name in zip(columns, order, strict=True):
                messages = [
                    {"role": "system", "content": "You are a materials scientist."},
                    {"role": "user", "content": "How does collagen resemble a leaf?"},
                ]
                # What the page shows is the model's own answer (same sampling, same seed).
                expected = _alone(
                    generators[name], messages, name="study", max_new_tokens=8, seed=5
                )
                assert column["answers"][0] == expected
                history[name] = [*messages, {"role": "assistant", "content": column["answers"][0]}]
            _ask(page, "Now a design drawn from both.")
            second = _columns(page)
            for column, name in zip(second, order, strict=True):
                messages = [
                    *history[name],
                    {"role": "user", "content": "Now a design drawn from both."},
                ]
                # Turn 2 uses seed + 1, and each model sees its own first answer.
                expected = _alone(
                    generators[name], messages, name="study", max_new_tokens=8, seed=6
                )
                assert column["answers"][1] == expected
            page.click("#vote-buttons button[data-winner='tie']")
            page.wait_for_selector("#vote-status:has-text('Vote saved')")
            page.screenshot(path=str(tmp_path / "side-by-side.png"), full_page=True)
            requests, errors = browser.requests, browser.errors
            browser.close()
    finally:
        server.shutdown()

    assert errors == []
    assert all(url.startswith(base + "/") for _, url, _ in requests), requests
    chats = [
        json.loads(body) for method, url, body in requests if url.endswith("/v1/chat/completions")
    ]
    assert len(chats) == 4 and all(chat["stream"] is True for chat in chats)
    assert {chat["model"] for chat in chats} == {"tiny-a", "tiny-b"}
    records = [json.loads(line) for line in (tmp_path / "votes.jsonl").read_text().splitlines()]
    assert [r["winner"] for r in records] == ["a", "tie"]
    first, second_vote = records
    assert (first["a"], first["b"]) == tuple(order) == (second_vote["a"], second_vote["b"])
    assert first["prompt"] == "How does collagen resemble a leaf?"
    assert first["answer_a"] == columns[0]["answers"][0]
    assert first["blind"] is True and second_vote["blind"] is False  # names seen after vote 1
    assert first["turn"] == 0 and second_vote["turn"] == 1
    assert first["session"] == second_vote["session"] and first["vote"] != second_vote["vote"]
    assert first["system"] == "You are a materials scientist."
    assert first["time"].endswith("Z") and first["settings"]["max_tokens"] == 8

    from alloylm.chat.judge import load_votes

    assert load_votes(tmp_path / "votes.jsonl") == [
        (order[0], order[1], "a"),
        (order[0], order[1], "tie"),
    ]
    assert (tmp_path / "side-by-side.png").stat().st_size > 10_000


@pytest.mark.timeout(150)
def test_page_with_an_api_key_asks_for_it_and_three_columns(generators, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    key = "k-" + "7" * 30
    names = ["tiny-a", "tiny-b", "tiny-a#2"]
    server, base = _serve(generators, names, tmp_path, api_key=key)
    try:
        page_source = urllib.request.urlopen(base + "/ui/").read().decode()
        assert key not in page_source and '<script src="/ui/app.js"' in page_source
        with sync_playwright() as playwright:
            browser = Browser(playwright)
            page = browser.page
            page.goto(base + "/ui/")
            page.wait_for_selector("#key-panel:not([hidden])")
            page.fill("#key", "wrong")
            page.click("#key-ok")
            page.wait_for_selector("#key-error:has-text('refused')")
            page.fill("#key", key)
            page.press("#key", "Enter")
            page.wait_for_selector("#chat:not([hidden])")
            page.click("#settings summary")
            page.select_option("#preset", "greedy")
            page.fill("#max_tokens", "4")
            _ask(page, "hello")
            columns = _columns(page)
            assert [c["title"] for c in columns] == [
                f"{s}: {n}" for s, n in zip("ABC", names, strict=True)
            ]
            assert page.inner_text("#vote-question") == "Which answer is best?"
            page.click("#vote-buttons button[data-winner='B']")
            page.wait_for_selector("#vote-status:has-text('2 records')")
            # A fragment key (#key=...) is taken and removed from the address.
            second = browser.browser.new_page()
            second.goto(base + "/ui/#key=" + key)
            second.wait_for_selector("#chat:not([hidden])")
            assert second.url == base + "/ui/"
            requests, errors = browser.requests, browser.errors
            browser.close()

        records = [json.loads(line) for line in (tmp_path / "votes.jsonl").read_text().splitlines()]
        assert [(r["a"], r["b"], r["winner"]) for r in records] == [
            ("tiny-a", "tiny-b", "b"),  # B beat A
            ("tiny-b", "tiny-a#2", "a"),  # and B beat C; A against C is unknown
        ]
        assert errors == []
        assert all(url.startswith(base + "/") for _, url, _ in requests)

        def post(body: bytes, headers: dict) -> int:
            request = urllib.request.Request(base + "/ui/votes", body, headers, method="POST")
            try:
                return urllib.request.urlopen(request).status
            except urllib.error.HTTPError as error:
                return error.code

        vote = json.dumps({"models": ["tiny-a", "tiny-b"], "winner": "A", "prompt": "x"}).encode()
        good = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        assert post(vote, {"Content-Type": "application/json"}) == 401
        assert post(vote, {**good, "Content-Type": "text/plain"}) == 415
        assert post(vote, {**good, "Origin": "http://evil.example"}) == 403
        assert post(b"[1]", good) == 400
        unknown = json.dumps({"models": ["tiny-a", "nope"], "winner": "A", "prompt": "x"})
        assert post(unknown.encode(), good) == 400
        assert post(vote, {**good, "Origin": "http://127.0.0.1.evil.example"}) == 403
        assert post(vote, good) == 200
        own_origin = base.replace("http://", "https://")  # the page behind a TLS proxy
        assert post(vote, {**good, "Origin": own_origin}) == 200
        assert len((tmp_path / "votes.jsonl").read_text().splitlines()) == 4
        config = json.loads(urllib.request.urlopen(base + "/ui/config").read())
        assert config == {"authorized": False, "key_required": True}  # no names without the key
    finally:
        server.shutdown()


def test_ui_options_are_checked_before_any_model_loads(capsys) -> None:
    from alloylm.cli.main import main

    assert main(["serve", "tiny:llama", "--ui"]) == 2
    assert "2 to 4 models" in capsys.readouterr().err
    assert main(["serve", "tiny:llama", "tiny:llama:1", "--blind"]) == 2
    assert "add --ui" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_alloy_serve_ui_command_serves_the_page_and_says_where_votes_go(tmp_path) -> None:
    import os
    import re
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "alloylm.cli.main", "serve", "tiny:llama", "tiny:llama:1"]
    command += ["--ui", "--blind", "--port", "0", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ALLOY_API_KEY", None)
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        lines, deadline = [], time.time() + 90
        while time.time() < deadline and not any("votes are appended" in x for x in lines):
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
        output = "".join(lines)
        page = re.search(r"side-by-side page: (http://127\.0\.0\.1:\d+/ui/)", output)
        assert page, output
        assert f"votes are appended to {tmp_path / 'alloy-votes.jsonl'}" in output
        html = urllib.request.urlopen(page.group(1))
        assert html.headers["Content-Security-Policy"].startswith("default-src 'none'")
        config = json.loads(urllib.request.urlopen(page.group(1) + "config").read())
        assert config["models"] == ["tiny:llama", "tiny:llama:1"] and config["blind"] is True
    finally:
        process.terminate()
        process.wait(timeout=30)
