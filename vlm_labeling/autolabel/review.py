"""The review page of `pilot autolabel`: a person names the clusters nobody named and answers self-training's
audit in a browser, served on 127.0.0.1 with the standard library only (one HTML file, nothing from the web).

    GET  /  the page (review_page.html)    GET /api/state  what is left    GET /img/...  montages, frames
    POST /api/name   {"cluster": 3, "name": "npc_scout", "seconds": 2.4} ─▶ names.json, decisions.jsonl
    POST /api/audit  {"item": "4", "verdict": "accept" | "reject" | "redraw", "box": [x1, y1, x2, y2]}
                                      ─▶ audit/answers.json (+ audit/redrawn.json), decisions.jsonl

Each decision is written as it is made; a bad request is HTTP 400 with one line of JSON and changes nothing.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vlm_labeling.autolabel import naming as N
from vlm_labeling.autolabel import store
from vlm_labeling.autolabel.errors import AutolabelError, ReviewRequestError

log = logging.getLogger(__name__)

AUDIT = "audit"  # WORK/audit/: items.json, item_<n>.png, frame_<n>.png (training); answers.json, redrawn.json
ITEMS, ANSWERS, REDRAWN = "items.json", "answers.json", "redrawn.json"
ITEM_KEYS = ("item", "episode", "frame", "cls", "x1", "y1", "x2", "y2", "conf")
WHO = "person (review page)"
PAGE = Path(__file__).resolve().parent / "review_page.html"
MAX_BODY = 16 * 1024  # bytes of a POST body; a decision is under a hundred
VERDICTS = ("accept", "reject", "redraw")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _read(path: Path, hint: str) -> Any:
    try:
        return store.read_json(path)
    except FileNotFoundError:
        raise AutolabelError(f"{path}: missing; {hint}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AutolabelError(f"{path}: not readable as JSON ({exc})") from None


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG file, from its header."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(24)
    except OSError as exc:
        raise AutolabelError(f"{path}: not readable ({exc.strerror})") from None
    if len(head) < 24 or not head.startswith(PNG_SIGNATURE):
        raise AutolabelError(f"{path}: not a PNG image")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


# ------------------------------------------------------------------------------------------------ the audit


def audit_items(work: Path, data: Path | None) -> list[dict[str, Any]]:
    """The audit of WORK/audit/items.json ([] when self-training has not asked one); the frames that an
    older audit lacks are decoded from the episodes under `data`."""
    folder = Path(work) / AUDIT
    if not (folder / ITEMS).exists():
        return []
    items = _read(folder / ITEMS, "")
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and all(k in i for k in ITEM_KEYS) for i in items
    ):
        raise AutolabelError(f"{folder / ITEMS}: expected a list of audit items, each with {list(ITEM_KEYS)}")
    missing = [i for i in items if not (folder / f"frame_{i['item']}.png").exists()]
    if missing:
        write_frames(folder, missing, data)
    return items


def write_frames(folder: Path, items: list[dict[str, Any]], data: Path | None) -> None:
    """frame_<item>.png (the whole frame) of each item, decoded from its episode under `data`."""
    import cv2

    from bot.recordings.episode import open_episode

    if data is None:
        raise AutolabelError(f"{folder}: frame_<item>.png missing and no --data to decode the frames from")
    single = (data / "meta.json").exists()  # as training/autolabel.py: --data may be the one episode
    by_episode: dict[str, dict[int, list[str]]] = {}
    for item in items:
        by_episode.setdefault(item["episode"], {}).setdefault(int(item["frame"]), []).append(item["item"])
    for name, frames in sorted(by_episode.items()):
        path = data if single else data / name
        if not (path / "meta.json").exists():
            raise AutolabelError(f"{path}: episode {name!r} of {folder / ITEMS} not found; pass its --data")
        for index, frame in open_episode(path).frames(min(frames), max(frames) + 1):
            for item in frames.get(index, []):
                cv2.imwrite(str(folder / f"frame_{item}.png"), frame[:, :, ::-1])
    log.info("%s: %d audit frames decoded from the episodes", folder, len(items))


def read_answers(path: Path) -> dict[str, bool]:
    """{"<item>": true | false} as training/autolabel.py reads it; {} when there is no file yet."""
    if not path.exists():
        return {}
    answers = _read(path, "")
    if not isinstance(answers, dict) or not all(isinstance(v, bool) for v in answers.values()):
        raise AutolabelError(f'{path}: expected {{"<item>": true | false, ...}}')
    return answers


# ------------------------------------------------------------------------------------------------ requests


def _fields(body: Any, required: set[str], optional: set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ReviewRequestError(f"expected a JSON object, got {type(body).__name__}")
    missing = sorted(required - body.keys())
    unknown = sorted(body.keys() - required - optional)
    if missing or unknown:
        raise ReviewRequestError(f"missing fields {missing}, unknown fields {unknown}")
    return body


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _seconds(value: Any) -> float | None:
    """How long the person looked before deciding, as the page measured it (None: not measured)."""
    if value is None:
        return None
    if not _number(value) or value < 0:
        raise ReviewRequestError(f"seconds: expected a number >= 0 or null, got {value!r}")
    return float(value)


def _box(value: Any, size: tuple[int, int]) -> list[float]:
    """A redrawn box [x1, y1, x2, y2] in frame pixels, inside the frame and at least 1 px each way."""
    w, h = size
    if not (isinstance(value, list) and len(value) == 4 and all(_number(v) for v in value)):
        raise ReviewRequestError(f"box: expected [x1, y1, x2, y2] in frame pixels, got {value!r}")
    x1, y1, x2, y2 = (float(v) for v in value)
    if not (x1 >= 0 and y1 >= 0 and x1 + 1 <= x2 <= w and y1 + 1 <= y2 <= h):
        raise ReviewRequestError(f"box: expected 0 <= x1 < x2 <= {w}, 0 <= y1 < y2 <= {h}, got {value!r}")
    return [round(v, 2) for v in (x1, y1, x2, y2)]


# ------------------------------------------------------------------------------------------------ state


class ReviewState:
    """What the page shows and saves. Every request reads the work folder afresh, and decisions are written
    under one lock, so a reload, or a second server on the same folder, sees exactly what is left."""

    def __init__(self, work: Path, classes: list[str], audit: bool = True, data: Path | None = None) -> None:
        self.work = Path(work)
        self.choices = [*classes, N.IGNORE]
        hint = "run `pilot autolabel --data ... --out WORK` first"
        self.clusters = {int(c["id"]): c for c in _read(self.work / store.CLUSTERS, hint)}
        self.fingerprint = _read(self.work / store.CLUSTERS_META, hint)["fingerprint"]
        items = audit_items(self.work, data) if audit else []
        self.items = {str(i["item"]): i for i in items}
        self.sizes = {k: png_size(self.audit_dir / f"frame_{k}.png") for k in self.items}
        self.lock = threading.Lock()
        self.changed = threading.Event()  # set after every saved decision
        self._answers()  # a bad answers file is an error now, not at the first click

    @property
    def audit_dir(self) -> Path:
        return self.work / AUDIT

    def _answers(self) -> dict[str, bool]:
        return read_answers(self.audit_dir / ANSWERS) if self.items else {}

    def left(self) -> dict[str, int]:
        """How many clusters are unnamed and audit items unanswered."""
        named, answers = N.load_names(self.work, self.fingerprint), self._answers()
        return {
            "clusters": sum(cid not in named for cid in self.clusters),
            "audit": sum(item not in answers for item in self.items),
        }

    def todo(self) -> dict[str, Any]:
        """The page's work: the choices, the unnamed clusters (by id) and the unanswered audit items (least
        confident first)."""
        named, answers = N.load_names(self.work, self.fingerprint), self._answers()
        clusters = [self._cluster(c) for cid, c in sorted(self.clusters.items()) if cid not in named]
        audit = [self._item(i) for k, i in self.items.items() if k not in answers]
        audit.sort(key=lambda i: (i["conf"], i["episode"], i["frame"], i["item"]))
        return {
            "work": str(self.work),
            "classes": self.choices,
            "clusters": clusters,
            "audit": audit,
            "left": {"clusters": len(clusters), "audit": len(audit)},
        }

    def _cluster(self, cluster: dict[str, Any]) -> dict[str, Any]:
        members = cluster.get("members") or []
        widths = sorted(m["x2"] - m["x1"] for m in members)
        heights = sorted(m["y2"] - m["y1"] for m in members)
        return {
            "id": int(cluster["id"]),
            "size": int(cluster["size"]),
            "box": [round(widths[len(widths) // 2]), round(heights[len(heights) // 2])] if members else None,
            "image": f"/img/cluster/{cluster['id']}",
        }

    def _item(self, item: dict[str, Any]) -> dict[str, Any]:
        key = str(item["item"])
        return {
            "item": key,
            "episode": item["episode"],
            "frame": int(item["frame"]),
            "cls": item["cls"],
            "conf": float(item["conf"]),
            "box": [float(item[k]) for k in ("x1", "y1", "x2", "y2")],
            "size": list(self.sizes[key]),
            "image": f"/img/audit/{key}/frame",
            "crop": f"/img/audit/{key}/crop" if (self.audit_dir / f"item_{key}.png").exists() else None,
        }

    def image(self, path: str) -> Path | None:
        """The PNG behind an /img/ path of `todo()`, or None (only listed clusters and items are served)."""
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["img", "cluster"] and parts[2].isdigit():
            cluster = self.clusters.get(int(parts[2]))
            found = None if cluster is None else self.work / cluster["montage"]
        elif len(parts) == 4 and parts[:2] == ["img", "audit"] and parts[2] in self.items:
            name = {"frame": f"frame_{parts[2]}.png", "crop": f"item_{parts[2]}.png"}.get(parts[3])
            found = None if name is None else self.audit_dir / name
        else:
            found = None
        return found if found is not None and found.is_file() else None

    def name_cluster(self, body: Any) -> dict[str, Any]:
        """Save one cluster's name (names.json with the clusters' fingerprint; a decisions.jsonl line when
        the name is new or changed)."""
        body = _fields(body, {"cluster", "name"}, {"seconds"})
        cid, name = body["cluster"], body["name"]
        if isinstance(cid, bool) or not isinstance(cid, int) or cid not in self.clusters:
            raise ReviewRequestError(f"cluster: expected one of the ids {sorted(self.clusters)}, got {cid!r}")
        if name not in self.choices:
            raise ReviewRequestError(f"name: expected one of {self.choices}, got {name!r}")
        seconds = _seconds(body.get("seconds"))
        with self.lock:
            names = N.load_names(self.work, self.fingerprint)
            if names.get(cid, {}).get("name") != name:
                names[cid] = {"name": name, "by": WHO}
                N.save_names(self.work, self.fingerprint, names)
                store.record_decision(self.work, WHO, True, "name cluster", f"cluster {cid}", name, seconds)
        return {"ok": True, "left": self.left()}

    def answer_audit(self, body: Any) -> dict[str, Any]:
        """Save one audit answer: accept = true, reject = false, redraw = false and the person's box (in
        audit/redrawn.json, for the labels); a decisions.jsonl line when the answer is new or changed."""
        body = _fields(body, {"item", "verdict"}, {"box", "seconds"})
        key, verdict = body["item"], body["verdict"]
        if not isinstance(key, str) or key not in self.items:
            raise ReviewRequestError(
                f"item: expected one of the audit items {sorted(self.items)}, got {key!r}"
            )
        if verdict not in VERDICTS:
            raise ReviewRequestError(f"verdict: expected one of {list(VERDICTS)}, got {verdict!r}")
        if (verdict == "redraw") != ("box" in body):
            raise ReviewRequestError("box: expected with verdict redraw, and only then")
        box = _box(body["box"], self.sizes[key]) if verdict == "redraw" else None
        seconds = _seconds(body.get("seconds"))
        with self.lock:
            self._save_answer(key, verdict == "accept", box, seconds)
        return {"ok": True, "left": self.left()}

    def _save_answer(self, key: str, value: bool, box: list[float] | None, seconds: float | None) -> None:
        item = self.items[key]
        answers = read_answers(self.audit_dir / ANSWERS)
        redrawn_path = self.audit_dir / REDRAWN
        redrawn = _read(redrawn_path, "") if redrawn_path.exists() else {}
        mine = None
        if box is not None:  # everything training needs to make it a label, without items.json
            mine = {k: item[k] for k in ("episode", "frame", "cls")} | dict(
                zip(("x1", "y1", "x2", "y2"), box)
            )
        if answers.get(key) == value and redrawn.get(key) == mine:
            return
        if redrawn.get(key) != mine:  # written first: answers.json is what marks the item done
            redrawn = {k: v for k, v in redrawn.items() if k != key} | ({key: mine} if mine else {})
            store.write_json(redrawn_path, redrawn)
        store.write_json(self.audit_dir / ANSWERS, answers | {key: value})
        detail = {"conf": item["conf"], "cls": item["cls"]} | ({"redrawn": box} if box else {})
        store.record_decision(
            self.work, WHO, True, "audit detection", f"audit item {key}", value, seconds, **detail
        )


# ------------------------------------------------------------------------------------------------ server


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a browser's open connection never keeps the command alive
    state: ReviewState
    page: bytes


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _host_ok(self) -> bool:
        """Only pages of this server may talk to it: a Host of another name is a DNS-rebinding attempt."""
        port = self.server.server_address[1]
        if self.headers.get("Host") in (f"127.0.0.1:{port}", f"localhost:{port}"):
            return True
        self._json(403, {"error": f"Host: expected 127.0.0.1:{port}, got {self.headers.get('Host')!r}"})
        return False

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        path, state = urlsplit(self.path).path, self.server.state
        if path in ("/", "/index.html"):
            self._send(200, self.server.page, "text/html; charset=utf-8")
        elif path == "/api/state":
            try:
                self._json(200, state.todo())
            except AutolabelError as exc:  # the work folder went bad under us (a file edited by hand)
                self._json(500, {"error": str(exc)})
        elif (image := state.image(path)) is not None:
            self._send(200, image.read_bytes(), "image/png")
        else:
            self._json(404, {"error": f"{path}: no such page"})

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        state = self.server.state
        route = {"/api/name": state.name_cluster, "/api/audit": state.answer_audit}.get(
            urlsplit(self.path).path
        )
        try:
            if route is None:
                raise ReviewRequestError(f"{self.path}: no such API")
            result = route(self._body())
        except ReviewRequestError as exc:
            self._json(404 if route is None else 400, {"error": str(exc)})
            return
        except AutolabelError as exc:  # the work folder went bad under us (a file edited by hand)
            self._json(500, {"error": str(exc)})
            return
        self._json(200, result)
        state.changed.set()  # after the answer is sent: the command may stop the server at once

    def _body(self) -> Any:
        kind = self.headers.get("Content-Type", "")
        if kind.split(";")[0].strip() != "application/json":
            raise ReviewRequestError(f"Content-Type: expected application/json, got {kind!r}")
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_BODY:
            raise ReviewRequestError(f"Content-Length: expected a size up to {MAX_BODY}, got {length!r}")
        try:
            return json.loads(self.rfile.read(int(length)).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReviewRequestError(f"body: not JSON ({exc})") from None


class ReviewServer:
    """The page and its API on `host`:`port` (0: a free port), served from a thread until `close()` or the
    end of the `with` block."""

    def __init__(self, state: ReviewState, port: int = 0, host: str = "127.0.0.1") -> None:
        try:
            self.httpd = _Server((host, port), _Handler)
        except OSError as exc:
            raise AutolabelError(
                f"{host}:{port}: cannot serve the review page ({exc.strerror or exc}); "
                "choose another --review-port (0: a free one)"
            ) from None
        self.httpd.state, self.httpd.page = state, PAGE.read_bytes()
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.1,), name="autolabel-review", daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def __enter__(self) -> ReviewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe(left: dict[str, int]) -> str:
    parts = [f"{left['clusters']} clusters unnamed"]
    return ", ".join(parts + ([f"{left['audit']} audit items unanswered"] if left.get("audit") else []))


def serve(
    state: ReviewState,
    port: int,
    until: Callable[[dict[str, int]], bool],
    announce: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Serve the page until `until(left)` holds after a decision (at once when it already holds); returns
    what is left. Ctrl+C closes the server and raises AutolabelError saying how much is left (every decision
    made is already saved)."""
    left = state.left()
    if until(left):
        return left
    with ReviewServer(state, port) as server:
        try:
            (announce or (lambda url: log.info("review page: %s", url)))(server.url)
            while not until(left):
                if state.changed.wait(0.5):  # a timeout lets Ctrl+C through
                    state.changed.clear()
                    left = state.left()
        except KeyboardInterrupt:
            raise AutolabelError(
                f"review stopped with {describe(state.left())}; the decisions made are saved in "
                f"{state.work}, rerun to go on"
            ) from None
    return left
