"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for tests and offline demos.

    with FakeVLMServer() as server:
        server.enqueue(error_reply(500), answer_reply(mode="FIGHT", target_id=7))
        client = VLMClient(ClientConfig(base_url=server.base_url, ...))

Each POST takes the next scripted `Reply` (which may wait, drop the connection or kill the server), else
asks `policy(request)`; every request is recorded. `GroundTruthPolicy` answers like a VLM that sees the
truth. Standard library only. More: docs/notes/vlm_labeling.md, "vlm_labeling/fake_server.py".
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import threading
from collections import Counter, deque
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


# ----------------------------------------------------------------------------------------------- ground truth

_OBJECT_LINE = re.compile(r"id=(-?\d+) class=\S+ box=\[(-?\d+), (-?\d+), (-?\d+), (-?\d+)\]")
_MODES = ("FIGHT", "LOOT", "FLEE", "EXPLORE", "CAUTIOUS")  # schema.MODES; kept literal: stdlib-only module


def image_sha256s(request: RecordedRequest) -> list[str]:
    """sha256 of every image sent in the request's messages, in order (the key frame is the last)."""
    hashes = []
    for message in (request.body or {}).get("messages", []):
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            url = part.get("image_url", {}).get("url", "") if part.get("type") == "image_url" else ""
            if url.startswith("data:") and "," in url:
                hashes.append(hashlib.sha256(base64.b64decode(url.split(",", 1)[1])).hexdigest())
    return hashes


def listed_objects(request: RecordedRequest) -> dict[int, tuple[float, float, float, float]]:
    """Track id -> box of the objects the prompt lists (the text the client renders from TrackedObject)."""
    text = json.dumps((request.body or {}).get("messages", []))
    return {int(m[1]): tuple(float(v) for v in m.groups()[1:]) for m in _OBJECT_LINE.finditer(text)}


@dataclass(frozen=True)
class Truth:
    """What a perfect labeller would say about one key frame."""

    mode: str
    target_box: tuple[float, float, float, float] | None = None  # true target's box in key-frame px


class GroundTruthPolicy:
    """A `FakeVLMServer` policy answering from `truth` (key-frame image sha256 -> Truth) with `noise`.

    The wrong-or-right draw is seeded by (seed, image hash), so a frame gets the same answer however requests
    are ordered or retried. `asked` counts requests per key-frame hash (what a rerun must not repeat).
    """

    def __init__(
        self,
        truth: dict[str, Truth],
        noise: float = 0.0,
        seed: int = 0,
        confidence: tuple[float, float] = (0.75, 0.95),
        wrong_confidence: tuple[float, float] = (0.3, 0.6),
    ):
        self.truth, self.noise, self.seed = truth, noise, seed
        self.confidence, self.wrong_confidence = confidence, wrong_confidence
        self.asked: Counter[str] = Counter()
        self.wrong: set[str] = set()  # hashes answered with a wrong mode
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> Reply:
        hashes = image_sha256s(request)
        key = hashes[-1] if hashes else ""
        with self._lock:
            self.asked[key] += 1
        truth = self.truth.get(key)
        if truth is None:
            return error_reply(400, f"fake VLM: unknown key frame {key[:12]}")
        rng = random.Random(f"{self.seed}/{key}")
        mode, confidence = truth.mode, rng.uniform(*self.confidence)
        if rng.random() < self.noise:
            mode = rng.choice([m for m in _MODES if m != truth.mode])
            confidence = rng.uniform(*self.wrong_confidence)
            with self._lock:
                self.wrong.add(key)
        target = _best_overlap(truth.target_box, listed_objects(request))
        return answer_reply(mode=mode, confidence=round(confidence, 3), target_id=target,
                            rationale=f"fake VLM: {mode.lower()}")  # fmt: skip


def _best_overlap(
    box: tuple[float, ...] | None, objects: dict[int, tuple[float, float, float, float]]
) -> int | None:
    """The listed track whose box has the highest IoU (>= 0.3) with `box`, else None."""
    best, best_iou = None, 0.3
    for track_id, other in objects.items() if box is not None else ():
        ix = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
        iy = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
        inter = ix * iy
        union = (box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1]) - inter
        iou = inter / union if union > 0 else 0.0
        if iou >= best_iou:
            best, best_iou = track_id, iou
    return best


def truth_from_labels(root: Any, labels: str = "expert", config: Any = None) -> dict[str, Truth]:
    """The `GroundTruthPolicy` map for the episodes under `root`: key-frame image sha256 -> Truth from
    labels/<labels>.parquet, target boxes from the steps' `gt_objects` (Arena episodes).

    Key frames are planned and encoded exactly as `pilot label` does with `config` (a LabelConfig;
    None = its defaults), so the hashes match what the server receives. Imports lazily: the server itself
    needs only the standard library.
    """
    from pathlib import Path

    from bot.recordings.episode import find_episodes, open_episode
    from vlm_labeling.images import encode_image
    from vlm_labeling.label_config import LabelConfig
    from vlm_labeling.plan import plan_episode, requests

    config = config or LabelConfig(data=Path(root))
    truth: dict[str, Truth] = {}
    for path in find_episodes(root):
        episode = open_episode(path)
        by_frame = {row["frame"]: row for row in episode.labels(labels).to_pylist()}
        steps = episode.steps()
        gt = steps.column("gt_objects").to_pylist() if "gt_objects" in steps.column_names else None
        for request in requests(plan_episode(path, config)):
            frame = int(request.request_id.rsplit("/", 1)[1])
            row = by_frame[frame]
            box = None
            if row["target_id"] is not None and gt is not None:
                hit = next((o for o in gt[frame] or [] if o["id"] == row["target_id"]), None)
                box = None if hit is None else (hit["x1"], hit["y1"], hit["x2"], hit["y2"])
            image = encode_image(request.key_frame, config.client_config().image_format, config.jpeg_quality,
                                 config.max_image_side)  # fmt: skip
            truth[image.sha256] = Truth(row["mode"], box)
    return truth
