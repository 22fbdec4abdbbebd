"""An OpenAI-compatible server on the stdlib: POST /v1/chat/completions, GET /v1/models.

Generation goes through `alloylm/generation/` (the one loop: template, stop rule, sampling,
streaming, step-level batching). What this module adds is the HTTP contract:

- every client error is a 4xx in OpenAI's shape, {"error": {"message", "type", "param", "code"}};
  a field the server does not implement is refused with a 400 that names it, never ignored;
- several models are served by name (`alloy serve A B`); an unknown name is a 404. A request
  only ever picks among the models the server was started with: it cannot make it load a path;
- API keys are checked as `Authorization: Bearer KEY` with a constant-time compare. A bind to a
  non-loopback interface without a key is refused. Keys never appear in logs or error bodies;
- a bounded wait queue: beyond it, 503 with Retry-After;
- prompt + max_tokens is checked against the model's positions (400 context_length_exceeded).

`response_format: {"type": "json_object"}` is a JSON-object mode, not a grammar: until the first
`{` only tokens that start (after blanks) with `{` may be drawn, the EOS tokens are banned until
the object closes, and generation stops when the top-level object closes. The result is then
checked with `json.loads`: a reply with finish_reason "stop" is always a valid JSON object; one
that closed but does not parse is a 500 (code invalid_json_output), and one cut by max_tokens
comes back with finish_reason "length", as OpenAI does.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import queue
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from alloylm.data.chat_template import validate_messages
from alloylm.errors import ConfigError
from alloylm.generation.batching import Generation, ModelGenerator, QueueFull
from alloylm.generation.sampling import SamplingParams, is_json_object

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_N = 16
MAX_TOP_LOGPROBS = 20
MAX_STOP_STRINGS = 4
RETRY_AFTER_S = 1
# Accepted as long as they ask for nothing (OpenAI's defaults); any other value is a 400.
NEUTRAL_FIELDS: dict[str, tuple[Any, ...]] = {
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logit_bias": ({},),
    "parallel_tool_calls": (True, False),
    "tools": ([],),
}
# Accepted and without effect on the answer.
METADATA_FIELDS = ("user",)
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ApiError(Exception):
    """An HTTP error in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, str]]
    params: SamplingParams
    max_tokens: int | None  # None: the server's default, capped by the context
    n: int
    stream: bool
    include_usage: bool


def _invalid(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(name, f"{name} must be a number, got {json.dumps(value)}")
    if not low <= value <= high:
        raise _invalid(name, f"{name} must be between {low} and {high}, got {value}")
    return float(value)


def _integer(body: dict, name: str, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(name, f"{name} must be an integer, got {json.dumps(value)}")
    if value < low or (high is not None and value > high):
        limit = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _invalid(name, f"{name} must be {limit}, got {value}")
    return value


def _boolean(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid(name, f"{name} must be true or false, got {json.dumps(value)}")
    return value


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _invalid("messages", "messages must be a non-empty list of {role, content} objects")
    messages = []
    for position, message in enumerate(value):
        param = f"messages[{position}]"
        if not isinstance(message, dict):
            raise _invalid(param, f"{param} must be an object with 'role' and 'content'")
        extra = sorted(set(message) - {"role", "content", "name"})
        if extra:
            raise _invalid(f"{param}.{extra[0]}", f"{param}.{extra[0]} is not supported")
        role = message.get("role")
        if role not in ROLES:
            raise _invalid(
                f"{param}.role",
                f"{param}.role is {json.dumps(role)}; supported: {', '.join(ROLES)}",
            )
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise _invalid(f"{param}.content", "only text content parts are supported")
                if not isinstance(part.get("text"), str):
                    raise _invalid(f"{param}.content", "a text part needs a string 'text'")
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise _invalid(f"{param}.content", f"{param}.content must be a string")
        messages.append({"role": ROLES[role], "content": content})
    problem = validate_messages([*messages, {"role": "assistant", "content": ""}])
    if problem:
        raise _invalid("messages", problem)
    return messages


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or len(stops) > MAX_STOP_STRINGS
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise _invalid(
            "stop", f"stop must be a non-empty string or a list of up to {MAX_STOP_STRINGS}"
        )
    return tuple(stops)


def parse_chat_request(body: Any, models: Sequence[str]) -> ChatRequest:
    """A checked chat request, or ApiError naming the field (404 for an unknown model)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_body")
    known = {
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
        "top_k", "repetition_penalty", "seed", "stop", "n", "logprobs", "top_logprobs",
        "response_format", "stream", "stream_options", *NEUTRAL_FIELDS, *METADATA_FIELDS,
    }  # fmt: skip
    for name, value in body.items():
        if name not in known and value is not None:
            raise ApiError(
                400, f"{name} is not supported by this server", param=name, code="unsupported"
            )
        if name in NEUTRAL_FIELDS and value is not None and value not in NEUTRAL_FIELDS[name]:
            raise ApiError(
                400,
                f"{name} is not supported by this server (only its default is accepted)",
                param=name,
                code="unsupported",
            )
    model = body.get("model")
    if model is None and len(models) == 1:
        model = models[0]
    if not isinstance(model, str):
        raise _invalid("model", f"model must be one of: {', '.join(models)}")
    if model not in models:
        raise ApiError(
            404,
            f"the model {model!r} is not served here; served: {', '.join(models)}",
            param="model",
            code="model_not_found",
        )
    messages = _messages(body.get("messages"))
    max_tokens = _integer(body, "max_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_completion_tokens", 1)
    logprobs = _boolean(body, "logprobs")
    top_logprobs = _integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS) or 0
    if top_logprobs and not logprobs:
        raise _invalid("top_logprobs", "top_logprobs needs logprobs: true")
    response_format = body.get("response_format") or {"type": "text"}
    if not isinstance(response_format, dict) or response_format.get("type") not in (
        "text",
        "json_object",
    ):
        raise ApiError(
            400,
            "response_format supports {'type': 'text'} and {'type': 'json_object'}",
            param="response_format",
            code="unsupported",
        )
    stream = _boolean(body, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise _invalid("stream_options", "stream_options needs stream: true")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise _invalid("stream_options", "stream_options supports include_usage only")
        include_usage = _boolean(options, "include_usage")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _invalid("seed", f"seed must be an integer, got {json.dumps(seed)}")
    top_k = _integer(body, "top_k", 0) or 0
    params = SamplingParams(
        max_new_tokens=max_tokens or 1,
        temperature=_number(body, "temperature", 0.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 1e-9, 1.0),
        top_k=top_k,
        repetition_penalty=_number(body, "repetition_penalty", 1.0, 1e-9, 10.0),
        seed=seed,
        stop=_stop(body.get("stop")),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        json_object=response_format["type"] == "json_object",
    )
    return ChatRequest(
        model=model,
        messages=messages,
        params=params,
        max_tokens=max_tokens,
        n=_integer(body, "n", 1, MAX_N) or 1,
        stream=stream,
        include_usage=include_usage,
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_key(header: str | None, api_key: str | None) -> bool:
    """True when no key is configured or `Authorization: Bearer KEY` carries it (constant time)."""
    if not api_key:
        return True
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), api_key.encode())


def _choice_logprobs(result: Generation) -> dict[str, Any] | None:
    if result.logprobs is None:
        return None
    return {"content": [entry.as_openai() for entry in result.logprobs]}


class AlloyServer(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog (socketserver's default is 5): with more clients connecting at once,
    # the kernel drops their handshakes, so they stall for seconds or are reset. The kernel caps
    # it at net.core.somaxconn. Overload is answered by the 503 queue, not by the backlog.
    request_queue_size = 1024
    ui: Any = None  # the side-by-side page (chat/webui.py, `alloy serve --ui`) when attached

    def __init__(
        self,
        address: tuple[str, int],
        models: Mapping[str, ModelGenerator],
        *,
        api_key: str | None,
        default_max_tokens: int,
    ) -> None:
        if not is_loopback(address[0]) and not api_key:
            raise ConfigError(
                f"refusing to serve on {address[0]!r} without an API key",
                key="--host",
                hint="pass --api-key KEY (or set ALLOY_API_KEY), or bind 127.0.0.1",
            )
        self.models = dict(models)
        self.api_key = api_key
        self.default_max_tokens = default_max_tokens
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a cancelled stream, a closed keep-alive connection) is normal
        traffic, not a traceback on the server's terminal; anything else keeps socketserver's
        report."""
        if isinstance(sys.exc_info()[1], ConnectionError):  # reset, broken pipe, aborted
            return
        super().handle_error(request, client_address)

    def prepare(self, request: ChatRequest) -> tuple[ModelGenerator, list[int], SamplingParams]:
        """The model, prompt ids and final params; checks the context length."""
        generator = self.models[request.model]
        prompt = generator.encode_chat(request.messages)
        limit = generator.context_length
        max_tokens = request.max_tokens
        if max_tokens is None:
            max_tokens = self.default_max_tokens
            if limit is not None:
                max_tokens = min(max_tokens, limit - len(prompt))
        if limit is not None and len(prompt) + max(max_tokens, 1) > limit:
            raise ApiError(
                400,
                f"this model's context is {limit} tokens; the prompt has {len(prompt)} and "
                f"max_tokens asks for {max_tokens} more",
                param="messages",
                code="context_length_exceeded",
            )
        return generator, prompt, replace(request.params, max_new_tokens=max_tokens)


def _seeds(params: SamplingParams, n: int) -> list[SamplingParams]:
    """n choices: a seeded request gives choice i the seed seed+i (reproducible, not identical)."""
    if params.seed is None or n == 1:
        return [params] * n
    return [replace(params, seed=params.seed + index) for index in range(n)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 600  # seconds a connection may sit idle or blocked (keep-alive, a stalled reader)
    server: AlloyServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet; never logs headers or keys
        pass

    # -- responses
    def _send(self, status: int, body: dict[str, Any], headers: Mapping[str, str] = {}) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _fail(self, error: ApiError) -> None:
        self._send(error.status, error.body(), error.headers)

    def _authorized(self) -> bool:
        if check_api_key(self.headers.get("Authorization"), self.server.api_key):
            return True
        self._fail(
            ApiError(
                401,
                "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                code="invalid_api_key",
            )
        )
        return False

    def _route(self) -> str:
        path = self.path.split("?", 1)[0].rstrip("/")
        return path[3:] if path.startswith("/v1/") else path

    # -- GET
    def do_GET(self) -> None:
        if self.server.ui is not None and self.server.ui.handle(self, "GET"):
            return None
        route = self._route()
        if route == "/health":
            return self._send(200, {"status": "ok"})
        if not self._authorized():
            return None
        cards = {
            name: {"id": name, "object": "model", "created": 0, "owned_by": "alloylm"}
            for name in self.server.models
        }
        if route == "/models":
            return self._send(200, {"object": "list", "data": list(cards.values())})
        if route.startswith("/models/") and route[len("/models/") :] in cards:
            return self._send(200, cards[route[len("/models/") :]])
        if route.startswith("/models/"):
            return self._fail(ApiError(404, "no such model", code="model_not_found"))
        return self._fail(ApiError(404, f"no route {self.path}", code="not_found"))

    # -- POST
    def _read_body(self) -> Any:
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(411, "send the body with a Content-Length", code="length_required")
        try:
            length = int(length_text or 0)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "Content-Length is not a number", code="invalid_body") from None
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(413, f"the body is limited to {MAX_BODY_BYTES} bytes", code="too_large")
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None

    def do_POST(self) -> None:
        if self.server.ui is not None and self.server.ui.handle(self, "POST"):
            return None
        try:
            body = self._read_body()
        except ApiError as error:
            return self._fail(error)
        if not self._authorized():
            return None
        if self._route() != "/chat/completions":
            return self._fail(ApiError(404, f"no route {self.path}", code="not_found"))
        try:
            request = parse_chat_request(body, list(self.server.models))
            generator, prompt, params = self.server.prepare(request)
            events: queue.Queue[tuple[int, tuple]] = queue.Queue()
            handles = generator.submit_many(
                prompt, _seeds(params, request.n), lambda i, e: events.put((i, e))
            )
        except ApiError as error:
            return self._fail(error)
        except QueueFull:
            return self._fail(
                ApiError(
                    503,
                    "the server is busy; retry shortly",
                    code="overloaded",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
            )
        try:
            if request.stream:
                self._stream(request, len(prompt), events)
            else:
                self._complete(request, [handle.wait() for handle in handles])
        except (BrokenPipeError, ConnectionResetError):  # the client went away
            self.close_connection = True
        finally:
            for handle in handles:
                handle.cancel()

    def _completion_id(self) -> dict[str, Any]:
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time())}

    def _complete(self, request: ChatRequest, results: list[Generation]) -> None:
        for result in results:
            if result.error is not None:
                return self._fail(
                    ApiError(500, f"generation failed: {type(result.error).__name__}")
                )
            problem = self._json_problem(request, result)
            if problem:
                return self._fail(problem)
        prompt_tokens = results[0].prompt_tokens
        completion_tokens = sum(result.completion_tokens for result in results)
        self._send(
            200,
            {
                **self._completion_id(),
                "object": "chat.completion",
                "model": request.model,
                "choices": [
                    {
                        "index": index,
                        "message": {"role": "assistant", "content": result.text},
                        "logprobs": _choice_logprobs(result),
                        "finish_reason": result.finish_reason,
                    }
                    for index, result in enumerate(results)
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    @staticmethod
    def _json_problem(request: ChatRequest, result: Generation) -> ApiError | None:
        if not request.params.json_object or result.finish_reason != "stop":
            return None
        if is_json_object(result.text):
            return None
        return ApiError(
            500,
            "the model's reply is not a valid JSON object (json_object mode checks, it does not "
            "enforce a grammar); retry, perhaps with another seed or temperature",
            code="invalid_json_output",
        )

    def _stream(
        self, request: ChatRequest, prompt_tokens: int, events: queue.Queue[tuple[int, tuple]]
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {**self._completion_id(), "object": "chat.completion.chunk", "model": request.model}
        usage_field = {"usage": None} if request.include_usage else {}

        def send(payload: dict[str, Any] | str) -> None:
            text = payload if isinstance(payload, str) else json.dumps(payload)
            data = f"data: {text}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def chunk(index: int, delta: dict[str, Any], **extra: Any) -> dict[str, Any]:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
            return {**base, "choices": [{**choice, **extra}], **usage_field}

        for index in range(request.n):
            send(chunk(index, {"role": "assistant", "content": ""}))
        open_choices, completion_tokens = request.n, 0
        while open_choices:
            index, event = events.get()
            if event[0] == "delta":
                _, text, entries = event
                logprobs = (
                    {"content": [entry.as_openai() for entry in entries]}
                    if request.params.logprobs
                    else None
                )
                send(chunk(index, {"content": text}, logprobs=logprobs))
                continue
            result: Generation = event[1]
            open_choices -= 1
            completion_tokens += result.completion_tokens
            if result.error is not None:
                failure = ApiError(500, f"generation failed: {type(result.error).__name__}")
                send(failure.body())
                break
            problem = self._json_problem(request, result)
            if problem:
                send(problem.body())
                break
            send(chunk(index, {}, finish_reason=result.finish_reason))
        else:
            if request.include_usage:
                usage = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                }
                send({**base, "choices": [], "usage": usage})
        send("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def start_server(
    folder: str | Path | Mapping[str, str | Path],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    model_name: str | None = None,
    max_batch: int = 8,
    max_queue: int = 64,
    default_max_tokens: int = 256,
    threads: int | None = None,
    api_key: str | None = None,
    generators: Mapping[str, ModelGenerator] | None = None,
) -> tuple[AlloyServer, threading.Thread]:
    """Serve models in a background thread; `server.server_address[1]` is the bound port.

    `folder` is one model folder (named `model_name`, default its folder name) or a mapping
    {name: folder}. Already loaded `generators` may be given instead (tests share one).
    """
    if not is_loopback(host) and not api_key:  # before any model loads
        raise ConfigError(
            f"refusing to serve on {host!r} without an API key",
            key="--host",
            hint="pass --api-key KEY (or set ALLOY_API_KEY), or bind 127.0.0.1",
        )
    if generators is None:
        folders = (
            dict(folder)
            if isinstance(folder, Mapping)
            else {model_name or Path(folder).name: folder}
        )
        generators = {
            name: ModelGenerator(path, max_batch=max_batch, max_queue=max_queue, threads=threads)
            for name, path in folders.items()
        }
    server = AlloyServer(
        (host, port), generators, api_key=api_key, default_max_tokens=default_max_tokens
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="alloy-serve")
    thread.start()
    return server, thread
