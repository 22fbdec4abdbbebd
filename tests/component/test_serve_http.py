"""`alloy serve` at the raw HTTP level: malformed bodies, routes, keep-alive after errors, CLI guards."""

from __future__ import annotations

import argparse
import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from alloylm.chat.serve import check_api_key, is_loopback, parse_chat_request, start_server
from alloylm.cli import serve as serve_cli
from alloylm.errors import ConfigError
from alloylm.generation.batching import ModelGenerator

KEY = "raw-key-1234"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def port(tiny_llama: Path) -> Iterator[int]:
    generator = ModelGenerator(tiny_llama, max_batch=2)
    server, _ = start_server({}, generators={"tiny": generator}, api_key=KEY)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    generator.close()


def _call(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict | None = None,
) -> tuple[int, dict]:
    connection.request(method, path, body=body, headers=AUTH if headers is None else headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"[1,2]", "invalid_body"),
        (b"null", "invalid_body"),
        (b'"text"', "invalid_body"),
        (b"", "invalid_json"),
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "abc"}',
            "invalid_value",
        ),
        (b'{"messages": [{"role": "user", "content": 5}]}', "invalid_value"),
        (b'{"messages": "hello"}', "invalid_value"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "seed": 1.5}', "invalid_value"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "functions": []}', "unsupported"),
    ],
)
def test_malformed_bodies_get_400_in_openai_shape_and_the_connection_lives(
    port: int, raw: bytes, code: str
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    status, body = _call(connection, "POST", "/v1/chat/completions", raw)
    assert status == 400 and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code and body["error"]["type"] == "invalid_request_error"
    # the same keep-alive connection still answers
    ok = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
    status, body = _call(connection, "POST", "/v1/chat/completions", ok)
    assert status == 200 and body["usage"]["completion_tokens"] == 2
    connection.close()


def test_routes_auth_and_health(port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    assert _call(connection, "GET", "/health", headers={}) == (200, {"status": "ok"})
    status, body = _call(connection, "GET", "/v1/models", headers={})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = _call(connection, "GET", "/v1/models", headers={"Authorization": KEY})
    assert status == 401  # the scheme must be Bearer
    status, body = _call(connection, "GET", "/v1/models")
    assert status == 200 and [m["id"] for m in body["data"]] == ["tiny"]
    assert _call(connection, "GET", "/v1/models/other")[0] == 404
    assert _call(connection, "GET", "/v1/nowhere")[0] == 404
    assert _call(connection, "POST", "/v1/completions", b"{}")[0] == 404
    status, body = _call(
        connection, "POST", "/v1/chat/completions", b"{}", headers={"Content-Length": "2"}
    )
    assert status == 401 and KEY not in json.dumps(body)
    connection.close()


def test_a_bad_content_length_is_refused(port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.putrequest("POST", "/v1/chat/completions")
    connection.putheader("Authorization", f"Bearer {KEY}")
    connection.putheader("Content-Length", "lots")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 400 and json.loads(response.read())["error"]["code"] == "invalid_body"
    connection.close()


def test_a_stream_is_chunked_server_sent_events(port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "stream": True,
        "temperature": 1.0,
        "seed": 3,
    }
    connection.request("POST", "/v1/chat/completions", body=json.dumps(body), headers=AUTH)
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Transfer-Encoding") == "chunked"
    events = response.read().decode().split("\n\n")
    assert events[-2] == "data: [DONE]" and events[-1] == ""
    chunks = [json.loads(event[6:]) for event in events[:-2]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    connection.close()


def test_request_checks_without_a_server() -> None:
    base = {
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ]
    }
    request = parse_chat_request(base, ["only"])
    assert request.model == "only"  # one served model: the name may be left out
    assert request.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert request.max_tokens is None and request.params.greedy and request.n == 1
    with pytest.raises(Exception, match="model must be one of"):
        parse_chat_request(base, ["a", "b"])  # several: the name is required
    full = parse_chat_request(
        {
            **base,
            "model": "b",
            "max_completion_tokens": 7,
            "stop": "END",
            "top_k": 40,
            "repetition_penalty": 1.1,
            "response_format": {"type": "json_object"},
        },
        ["a", "b"],
    )
    assert full.max_tokens == 7 and full.params.stop == ("END",) and full.params.top_k == 40
    assert full.params.json_object and full.params.repetition_penalty == 1.1


def test_key_checks_and_loopback() -> None:
    assert check_api_key(None, None) and check_api_key("Bearer x", "")
    assert check_api_key("Bearer s3cret", "s3cret") and check_api_key("bearer s3cret", "s3cret")
    assert not check_api_key("Bearer s3cre", "s3cret") and not check_api_key(None, "s3cret")
    assert not check_api_key("Basic s3cret", "s3cret")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("10.0.0.2")


def _cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_refuses_a_public_bind_without_a_key_before_loading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ALLOY_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="without an API key"):
        serve_cli.run(_cli_args("no-such-model-folder", "--host", "0.0.0.0"))
    with pytest.raises(ConfigError, match="one --name per MODEL"):
        serve_cli.run(_cli_args("a", "b", "--name", "x"))
    with pytest.raises(ConfigError, match="share a name"):
        serve_cli.run(_cli_args("a", "b", "--name", "x", "--name", "x"))
    args = _cli_args("a", "b", "--api-key", "k")
    assert args.models == ["a", "b"] and args.api_key == "k"


def test_the_key_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from alloylm.errors import ModelSourceError

    monkeypatch.setenv("ALLOY_API_KEY", "from-env")
    with pytest.raises(ModelSourceError):  # past the key check: it fails resolving the model
        serve_cli.run(_cli_args("no-such-model-folder", "--host", "0.0.0.0"))


def test_json_mode_reports_an_object_that_does_not_parse() -> None:
    from alloylm.chat.serve import _Handler
    from alloylm.generation.batching import Generation

    request = parse_chat_request(
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"},
        },
        ["m"],
    )
    closed = Generation('{"a": nope}', [1], 3, "stop")
    problem = _Handler._json_problem(request, closed)
    assert problem is not None and problem.status == 500
    assert problem.body()["error"]["code"] == "invalid_json_output"
    assert _Handler._json_problem(request, Generation('{"a": [1]}', [1], 3, "stop")) is None
    assert _Handler._json_problem(request, Generation('{"a": ', [1], 3, "length")) is None


def test_a_client_that_hangs_up_leaves_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    """socketserver prints a traceback for any error in a handler, ConnectionResetError from a
    client that closed its socket included (seen under benchmarks/serve_speed.py)."""
    from alloylm.chat.serve import AlloyServer

    server = AlloyServer(("127.0.0.1", 0), {}, api_key=None, default_max_tokens=8)
    try:
        for error in (ConnectionResetError(104, "reset by peer"), BrokenPipeError(32, "pipe")):
            try:
                raise error
            except ConnectionError:
                server.handle_error(None, ("127.0.0.1", 1))
        assert "Traceback" not in capfd.readouterr().err
        try:
            raise ValueError("a real bug")
        except ValueError:
            server.handle_error(None, ("127.0.0.1", 1))
        assert "Traceback" in capfd.readouterr().err
    finally:
        server.server_close()
