"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for tests and offline demos.

It lives in the package, not under tests/, so that every test suite (this package's, and the labelling runs
built on it) and a demo without a real VLM can start one; it uses only the standard library.

    with FakeVLMServer() as server:
        server.enqueue(error_reply(500), answer_reply(mode="FIGHT", target_id=7))
        client = VLMClient(ClientConfig(base_url=server.base_url, ...))

Each POST takes the next scripted `Reply` from the queue; when the queue is empty `policy(request)`
decides (default: a valid EXPLORE answer). Every request is recorded (path, headers, decoded JSON body), and
the server counts the requests in flight. A reply can wait (`delay_s`), drop the connection without
answering (`drop`), or drop it and then take the whole server down (`die`), after which every connection is
refused.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What the server does with one request."""

    status: int = 200
    body: Any = None  # dict/list -> JSON, str/bytes -> sent as is, None -> empty
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait this long before answering (cut short when the server stops)
    drop: bool = False  # close the connection without any reply
    die: bool = False  # drop, then stop the server: later connections are refused


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: Any  # decoded JSON, or None when the body was not JSON
    raw: bytes


def chat_completion(content: str, prompt_tokens: int = 1200, completion_tokens: int = 30) -> dict[str, Any]:
    """A chat.completion object as OpenAI-compatible servers return it."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-vlm",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def answer_json(
    mode: Any = "EXPLORE", confidence: Any = 0.7, target_id: Any = None, rationale: Any = "nothing nearby"
) -> str:
    return json.dumps(
        {"mode": mode, "confidence": confidence, "target_id": target_id, "rationale": rationale}
    )


def answer_reply(**fields: Any) -> Reply:
    """A 200 whose content is a bare, valid-shaped answer object (`fields` override its values)."""
    return Reply(body=chat_completion(answer_json(**fields)))


def content_reply(content: str) -> Reply:
    """A 200 whose assistant content is exactly `content`."""
    return Reply(body=chat_completion(content))


def error_reply(status: int, message: str = "server error", headers: dict[str, str] | None = None) -> Reply:
    """An OpenAI-style error body: {"error": {"message", "type", "code"}}."""
    body = {"error": {"message": message, "type": "invalid_request_error", "code": status}}
    return Reply(status=status, body=body, headers=headers or {})


class FakeVLMServer:
    """ThreadingHTTPServer on 127.0.0.1 (port chosen by the OS) in a background thread."""

    def __init__(self, policy: Callable[[RecordedRequest], Reply] | None = None):
        self.policy = policy or (lambda request: answer_reply())
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate: int | None = None  # if set, requests wait until this many were in flight at once (or 5 s)
        self._queue: deque[Reply] = deque()
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._serve, name="fake-vlm", daemon=True)
        self._stopped = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FakeVLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; waiting replies are released. Idempotent."""
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeVLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def enqueue(self, *replies: Reply) -> None:
        with self._cond:
            self._queue.extend(replies)

    @property
    def bodies(self) -> list[Any]:
        with self._cond:
            return [r.body for r in self.requests]

    def _serve(self) -> None:
        self._httpd.serve_forever(poll_interval=0.02)

    def _enter(self, request: RecordedRequest) -> Reply:
        with self._cond:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._cond.notify_all()
            if self._stopping.is_set():
                return Reply(drop=True)  # dying: nothing more gets an answer
            return self._queue.popleft() if self._queue else self.policy(request)

    def _leave(self) -> None:
        with self._cond:
            self.in_flight -= 1

    def _wait_gate(self) -> None:
        if self.gate is None:
            return
        with self._cond:
            # Latches open once reached, so later requests are not held back.
            self._cond.wait_for(
                lambda: self.max_in_flight >= self.gate or self._stopping.is_set(), timeout=5.0
            )

    def _die(self) -> None:
        self._stopping.set()
        threading.Thread(target=self.stop, name="fake-vlm-stop", daemon=True).start()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (the http.server API name)
        fake: FakeVLMServer = self.server.fake  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        reply = fake._enter(RecordedRequest(self.path, dict(self.headers.items()), body, raw))
        try:
            fake._wait_gate()
            if reply.delay_s:
                fake._stopping.wait(reply.delay_s)
            if reply.die:
                fake._die()
            if reply.drop or reply.die:
                self.close_connection = True
                return
            self._send(reply)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout) before the reply: expected in the timeout tests
        finally:
            fake._leave()

    def _send(self, reply: Reply) -> None:
        if isinstance(reply.body, dict | list):
            data = json.dumps(reply.body).encode()
        elif isinstance(reply.body, str):
            data = reply.body.encode()
        else:
            data = reply.body or b""
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (signature of the base class)
        pass  # keep test output clean
