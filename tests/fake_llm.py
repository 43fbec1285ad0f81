"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests and benchmarks.

Each POST to /v1/chat/completions takes the next item of the script: a streamed reply
(text and tool calls, split into chunks), an HTTP error, or a stream that stalls. Requests
are recorded so tests can assert what the model was sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """A streamed answer. `tool_calls` are (name, arguments-json-text) pairs; the text and
    each call's arguments are sent in pieces of `chunk` characters."""

    text: str = ""
    tool_calls: list[tuple[str, str]] = field(default_factory=list)
    chunk: int = 4
    usage: dict[str, Any] | None = None
    delay: float = 0.0


@dataclass
class Status:
    code: int
    body: str = '{"error": {"message": "scripted failure"}}'
    retry_after: str | None = None


@dataclass
class Stall:
    """Send `text` then stop sending anything (keeping the connection open)."""

    text: str = ""
    seconds: float = 30.0


class FakeLLM:
    """Start with `with FakeLLM() as llm:`; `llm.base_url` is the provider's base URL."""

    def __init__(self) -> None:
        self.script: deque[Reply | Status | Stall] = deque()
        self.requests: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._stop = threading.Event()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def add(self, *items: Reply | Status | Stall) -> FakeLLM:
        self.script.extend(items)
        return self

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                body = json.dumps({"data": [{"id": "scripted-model"}, {"id": "other"}]}).encode()
                self._send(200, body, "application/json")

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                fake.requests.append(json.loads(self.rfile.read(length)))
                item = fake.script.popleft() if fake.script else Reply("(script exhausted)")
                if isinstance(item, Status):
                    extra = {"Retry-After": item.retry_after} if item.retry_after else {}
                    self._send(item.code, item.body.encode(), "application/json", extra)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    if isinstance(item, Stall):
                        self._chunks(Reply(item.text), finish=False)
                        fake._stop.wait(item.seconds)
                        return
                    self._chunks(item, finish=True)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (abort, timeout): fine
                self.close_connection = True

            def _send(
                self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _event(self, payload: dict[str, Any] | str) -> None:
                data = payload if isinstance(payload, str) else json.dumps(payload)
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()

            def _chunks(self, reply: Reply, *, finish: bool) -> None:
                n = max(1, reply.chunk)
                for i in range(0, len(reply.text), n):
                    self._event(
                        {"choices": [{"index": 0, "delta": {"content": reply.text[i : i + n]}}]}
                    )
                    if reply.delay:
                        time.sleep(reply.delay)
                for index, (name, args) in enumerate(reply.tool_calls):
                    head = {
                        "index": index,
                        "id": f"call_{index}",
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                    self._event({"choices": [{"index": 0, "delta": {"tool_calls": [head]}}]})
                    for i in range(0, len(args), n):
                        part = {"index": index, "function": {"arguments": args[i : i + n]}}
                        self._event({"choices": [{"index": 0, "delta": {"tool_calls": [part]}}]})
                if not finish:
                    return
                reason = "tool_calls" if reply.tool_calls else "stop"
                self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
                usage = reply.usage or {"prompt_tokens": 10, "completion_tokens": 5}
                self._event({"choices": [], "usage": usage})
                self._event("[DONE]")

        return Handler
