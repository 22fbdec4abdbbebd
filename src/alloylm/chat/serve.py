"""A thin OpenAI-compatible server: POST /v1/chat/completions and GET /v1/models, stdlib only.

Prompts go through `format_prompt` (the one chat-template function), so a served model sees
exactly the formatting it was trained and evaluated with. Concurrent requests with the same
sampling settings are batched (left-padded) into one `generate` call, which is what lets a
distillation client with concurrency > 1 go faster than one request at a time.
`stream: true` is answered as server-sent events carrying the whole answer in one delta.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from alloylm.data.chat_template import format_prompt, validate_messages


@dataclass
class _Request:
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    error: BaseException | None = None


class ModelGenerator:
    """Greedy (temperature 0) or sampled chat generation with a model folder, batched across threads."""

    def __init__(
        self,
        folder: str | Path,
        *,
        max_batch: int = 8,
        dtype: str | None = None,
        threads: int | None = None,
    ) -> None:
        import torch

        if threads:
            # On a shared CPU, fewer intra-op threads can be several times faster (no spin-waiting).
            torch.set_num_threads(threads)
        from alloylm.models.loading import load_causal_lm, load_tokenizer

        self.torch = torch
        self.tokenizer = load_tokenizer(folder)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_causal_lm(folder, dtype=dtype).eval()
        self.max_batch = max_batch
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._worker = threading.Thread(target=self._loop, daemon=True, name="alloy-generate")
        self._worker.start()

    def generate(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """{'text', 'prompt_tokens', 'completion_tokens', 'finish_reason'} for one conversation."""
        request = _Request(messages, max_tokens, temperature, top_p, seed)
        self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + 0.005  # let concurrent requests join the batch
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            groups: dict[tuple, list[_Request]] = {}
            for request in batch:
                groups.setdefault((request.temperature, request.top_p, request.seed), []).append(
                    request
                )
            for group in groups.values():
                try:
                    for request, result in zip(group, self._generate_batch(group), strict=True):
                        request.result = result
                except BaseException as error:  # noqa: BLE001 - handed back to the waiting request
                    for request in group:
                        request.error = error
                for request in group:
                    request.done.set()

    def _generate_batch(self, group: list[_Request]) -> list[dict[str, Any]]:
        torch = self.torch
        prompts = [format_prompt(self.tokenizer, r.messages) for r in group]
        encoded = self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        )
        first = group[0]
        sample = first.temperature > 0
        if first.seed is not None:
            torch.manual_seed(first.seed)
        kwargs: dict[str, Any] = {
            "do_sample": sample,
            "max_new_tokens": max(r.max_tokens for r in group),
        }
        if sample:
            kwargs.update(temperature=first.temperature, top_p=first.top_p)
        with torch.no_grad():
            output = self.model.generate(
                **encoded,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                **kwargs,
            )
        width = encoded["input_ids"].shape[1]
        results = []
        for index, request in enumerate(group):
            new = output[index, width:].tolist()[: request.max_tokens]
            finish = "length"
            if self.tokenizer.eos_token_id in new:
                new = new[: new.index(self.tokenizer.eos_token_id)]
                finish = "stop"
            results.append(
                {
                    "text": self.tokenizer.decode(new, skip_special_tokens=True),
                    "prompt_tokens": int(encoded["attention_mask"][index].sum()),
                    "completion_tokens": len(new),
                    "finish_reason": finish,
                }
            )
        return results


def completion_body(model_name: str, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result["text"]},
                "finish_reason": result["finish_reason"],
            }
        ],
        "usage": {
            "prompt_tokens": result["prompt_tokens"],
            "completion_tokens": result["completion_tokens"],
            "total_tokens": result["prompt_tokens"] + result["completion_tokens"],
        },
    }


def make_handler(generator: ModelGenerator, model_name: str, default_max_tokens: int) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and benchmarks
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": {"message": message, "type": "invalid_request_error"}})

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(
                    200,
                    {
                        "object": "list",
                        "data": [{"id": model_name, "object": "model", "owned_by": "alloylm"}],
                    },
                )
            elif self.path.rstrip("/") == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                return self._error(404, f"no route {self.path}")
            try:
                body = json.loads(
                    self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}"
                )
            except json.JSONDecodeError:
                return self._error(400, "request body is not JSON")
            messages = body.get("messages")
            problem = (
                validate_messages([*messages, {"role": "assistant", "content": ""}])
                if isinstance(messages, list)
                else "messages must be a list"
            )
            if problem:
                return self._error(400, problem)
            try:
                result = generator.generate(
                    messages,
                    max_tokens=int(
                        body.get("max_tokens")
                        or body.get("max_completion_tokens")
                        or default_max_tokens
                    ),
                    temperature=float(body.get("temperature", 0.0) or 0.0),
                    top_p=float(body.get("top_p", 1.0) or 1.0),
                    seed=body.get("seed"),
                )
            except Exception as error:  # noqa: BLE001 - reported to the client as a 500
                return self._error(500, f"generation failed: {error}")
            if body.get("stream"):
                return self._stream(result)
            self._send(200, completion_body(model_name, result))

        def _stream(self, result: dict[str, Any]) -> None:
            base = {
                "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model_name,
            }
            events = [
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": result["text"]},
                            "finish_reason": None,
                        }
                    ],
                },
                {
                    **base,
                    "choices": [
                        {"index": 0, "delta": {}, "finish_reason": result["finish_reason"]}
                    ],
                },
            ]
            payload = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            data = payload.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def start_server(
    folder: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    model_name: str | None = None,
    max_batch: int = 8,
    default_max_tokens: int = 256,
    threads: int | None = None,
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve the model in a background thread; `server.server_address[1]` is the bound port."""
    generator = ModelGenerator(folder, max_batch=max_batch, threads=threads)
    name = model_name or Path(folder).name
    server = ThreadingHTTPServer((host, port), make_handler(generator, name, default_max_tokens))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="alloy-serve")
    thread.start()
    return server, thread
