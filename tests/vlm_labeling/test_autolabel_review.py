"""The review page of `pilot autolabel`: its HTTP API (urllib; bad requests are 400 and write nothing), the
run waiting on it, Ctrl+C, the audit files training reads, and the page itself in headless Chromium driven
by keys and a mouse drag (selenium), twice on one work folder."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from bot.profile import load_profile
from bot.recordings.episode import EpisodeMeta, EpisodeWriter
from training.autolabel import SelfTrainConfig, audited_threshold, read_answers, redrawn_labels
from vlm_labeling.autolabel import pipeline, store
from vlm_labeling.autolabel.cli import run
from vlm_labeling.autolabel.config import AutolabelConfig
from vlm_labeling.autolabel.errors import AutolabelError
from vlm_labeling.autolabel.review import ReviewServer, ReviewState, audit_items

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]
CLASSES = load_profile("arena").class_names  # player, npc_scout, ..., portal; then "ignore"
W, H = 64, 48  # px, the audit frames
CONFS = {"0": 0.4, "1": 0.1, "2": 0.7}  # audit items; the page shows 1, 0, 2


def make_work(root: Path, clusters: int = 3) -> Path:
    """A work folder as `pilot autolabel` and self-training leave it: clusters with montages, names.json
    not yet written, an audit of 3 detections with their frames and crops."""
    work, rng = root / "work", np.random.default_rng(0)
    listing = []
    for cid in range(clusters):
        montage = f"montages/cluster_{cid:03d}.png"
        (work / "montages").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(work / montage), rng.integers(0, 256, (84, 84, 3), np.uint8))
        members = [
            {"episode": "ep", "frame": f, "x1": 10.0, "y1": 5.0, "x2": 30.0 + cid, "y2": 21.0}
            for f in range(4)
        ]
        listing.append({"id": cid, "size": len(members), "montage": montage, "members": members})
    store.write_json(work / store.CLUSTERS, listing)
    fingerprint = hashlib.sha256((work / store.CLUSTERS).read_bytes()).hexdigest()[:16]
    store.write_json(
        work / store.CLUSTERS_META,
        {"settings": "test", "fingerprint": fingerprint, "episodes": ["ep"], "moving": {}},
    )
    store.write_json(work / "config.json", {"game": "arena", "data": str(root / "data")})
    items = []
    for n, (key, conf) in enumerate(CONFS.items()):
        box = {"x1": 8.0 + n, "y1": 6.0, "x2": 24.0 + n, "y2": 20.0}
        items.append({"item": key, "episode": "ep", "frame": 2 * n, "cls": "npc_scout", **box, "conf": conf})
        (work / "audit").mkdir(exist_ok=True)
        cv2.imwrite(str(work / "audit" / f"frame_{key}.png"), rng.integers(0, 256, (H, W, 3), np.uint8))
        cv2.imwrite(str(work / "audit" / f"item_{key}.png"), rng.integers(0, 256, (24, 24, 3), np.uint8))
    (work / "audit" / "items.json").write_text(json.dumps(items))
    return work


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return make_work(tmp_path)


@pytest.fixture
def server(work: Path):
    with ReviewServer(ReviewState(work, CLASSES, audit=True)) as srv:
        yield srv


def call(url: str, path: str, body: Any = None, raw: bytes | None = None, kind: str = "application/json"):
    """(status, decoded JSON answer) of a GET (no body) or a POST."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url.rstrip("/") + path, data=data, headers={"Content-Type": kind})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode()
        assert "\n" not in text.strip(), "an error is one line of JSON"
        return exc.code, json.loads(text)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def names_on_disk(work: Path) -> dict[str, str]:
    data = json.loads((work / "names.json").read_text())
    meta = json.loads((work / store.CLUSTERS_META).read_text())
    assert data["clusters"] == meta["fingerprint"]
    return {k: v["name"] for k, v in data["names"].items()}


# ------------------------------------------------------------------------------------------------ the API


def test_the_state_lists_what_is_left_least_confident_detection_first(server: ReviewServer):
    status, state = call(server.url, "/api/state")
    assert status == 200
    assert state["classes"] == [*CLASSES, "ignore"]
    assert [c["id"] for c in state["clusters"]] == [0, 1, 2]
    assert state["clusters"][2]["box"] == [22, 16] and state["clusters"][2]["size"] == 4
    assert [i["item"] for i in state["audit"]] == ["1", "0", "2"]
    assert state["audit"][0]["size"] == [W, H]
    with urllib.request.urlopen(server.url + "img/cluster/1", timeout=10) as reply:
        assert reply.headers["Content-Type"] == "image/png" and reply.read().startswith(b"\x89PNG")
    with urllib.request.urlopen(server.url, timeout=10) as reply:
        page = reply.read().decode()
    assert "<script>" in page and "://" not in page  # nothing from the web: it works offline


def test_a_name_is_saved_with_the_clusters_fingerprint_and_recorded_when_new_or_changed(
    server: ReviewServer, work: Path
):
    assert call(server.url, "/api/name", {"cluster": 1, "name": "npc_raider", "seconds": 1.5}) == (
        200,
        {"ok": True, "left": {"clusters": 2, "audit": 3}},
    )
    call(server.url, "/api/name", {"cluster": 1, "name": "npc_raider"})  # the same again: no new decision
    call(server.url, "/api/name", {"cluster": 1, "name": "ignore", "seconds": None})
    assert names_on_disk(work) == {"1": "ignore"}
    lines = store.read_decisions(work)
    assert [(d["who"], d["human"], d["subject"], d["value"], d["seconds"]) for d in lines] == [
        ("person (review page)", True, "cluster 1", "npc_raider", 1.5),
        ("person (review page)", True, "cluster 1", "ignore", None),
    ]
    _, state = call(server.url, "/api/state")
    assert [c["id"] for c in state["clusters"]] == [0, 2]


BAD = [
    ("/api/name", {"cluster": 7, "name": "player"}, "cluster: expected one of the ids"),
    ("/api/name", {"cluster": "0", "name": "player"}, "cluster: expected"),
    ("/api/name", {"cluster": True, "name": "player"}, "cluster: expected"),
    ("/api/name", {"cluster": 0, "name": "dragon"}, "name: expected one of"),
    ("/api/name", {"cluster": 0, "name": "player", "colour": "red"}, "unknown fields ['colour']"),
    ("/api/name", {"cluster": 0}, "missing fields ['name']"),
    ("/api/name", {"cluster": 0, "name": "player", "seconds": -1}, "seconds: expected"),
    ("/api/name", [0, "player"], "expected a JSON object"),
    ("/api/name", b'{"cluster": 0, "name": ', "body: not JSON"),
    ("/api/name", b"\xff\xfe", "body: not JSON"),
    ("/api/audit", {"item": "9", "verdict": "accept"}, "item: expected one of the audit items"),
    ("/api/audit", {"item": 0, "verdict": "accept"}, "item: expected"),
    ("/api/audit", {"item": "0", "verdict": "maybe"}, "verdict: expected one of"),
    ("/api/audit", {"item": "0", "verdict": "redraw"}, "box: expected with verdict redraw"),
    ("/api/audit", {"item": "0", "verdict": "accept", "box": [1, 1, 9, 9]}, "box: expected with verdict"),
    ("/api/audit", {"item": "0", "verdict": "redraw", "box": [1, 1, W + 1, 9]}, "box: expected 0 <= x1"),
    ("/api/audit", {"item": "0", "verdict": "redraw", "box": [9, 1, 5, 9]}, "box: expected 0 <= x1"),
    ("/api/audit", {"item": "0", "verdict": "redraw", "box": [1, 1, 9]}, "box: expected [x1"),
]


@pytest.mark.parametrize(
    ("path", "body", "error"),
    BAD,
    ids=[f"{path.rsplit('/', 1)[1]}-{n}" for n, (path, _, _) in enumerate(BAD)],
)
def test_a_bad_request_is_400_with_one_line_and_changes_nothing(server, work, path, body, error):
    before = snapshot(work)
    raw = body if isinstance(body, bytes) else None
    status, reply = call(server.url, path, None if raw else body, raw=raw)
    assert status == 400 and list(reply) == ["error"] and error in reply["error"]
    assert snapshot(work) == before


def test_other_bad_requests_change_nothing_either(server, work):
    before = snapshot(work)
    assert call(server.url, "/api/name", raw=b'{"cluster": 0, "name": "player"}', kind="text/plain")[0] == 400
    assert call(server.url, "/api/rename", {"cluster": 0, "name": "player"})[0] == 404
    assert call(server.url, "/img/cluster/99")[0] == 404
    assert call(server.url, "/img/audit/0/../../names.json")[0] == 404
    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/api/state", headers={"Host": f"evil.example:{port}"})  # DNS rebinding
    assert connection.getresponse().status == 403
    connection.close()
    assert snapshot(work) == before


def test_audit_answers_are_the_files_self_training_reads(server: ReviewServer, work: Path, tmp_path: Path):
    assert call(server.url, "/api/audit", {"item": "1", "verdict": "accept", "seconds": 0.8})[0] == 200
    assert (
        call(server.url, "/api/audit", {"item": "0", "verdict": "redraw", "box": [3, 4.5, 30, 40]})[0] == 200
    )
    items = json.loads((work / "audit" / "items.json").read_text())
    with pytest.raises(Exception, match=r"items \['2'\] have no true/false answer"):
        read_answers(work / "audit" / "answers.json", items)  # training waits for the rest
    status, reply = call(server.url, "/api/audit", {"item": "2", "verdict": "reject"})
    assert status == 200 and reply["left"] == {"clusters": 3, "audit": 0}
    assert read_answers(work / "audit" / "answers.json", items) == {"1": True, "0": False, "2": False}
    assert redrawn_labels(work) == {
        "ep": [{"frame": 0, "cls": "npc_scout", "x1": 3, "y1": 4.5, "x2": 30, "y2": 40, "conf": 1.0}]
    }
    call(server.url, "/api/audit", {"item": "0", "verdict": "accept"})  # changed: the redrawn box goes
    assert redrawn_labels(work) == {}
    audits = [d for d in store.read_decisions(work) if d["what"] == "audit detection"]
    assert [(d["subject"], d["value"]) for d in audits][-1] == ("audit item 0", True)
    assert audits[1]["redrawn"] == [3, 4.5, 30, 40]
    cut = audited_threshold(SelfTrainConfig(work=work, data=tmp_path), {}, {})  # training takes the answers
    assert 0.0 < cut <= 1.0
    assert [d for d in store.read_decisions(work) if d["what"] == "audit detection"] == audits  # not twice


# ------------------------------------------------------------------------------------------------ the command


def test_the_run_serves_the_page_while_clusters_are_unnamed_and_goes_on_once_they_are(work: Path, tmp_path):
    urls: queue.Queue[str] = queue.Queue()
    cfg = AutolabelConfig(data=tmp_path, out=work, review=True)
    clusters = store.read_json(work / store.CLUSTERS)
    store.write_json(work / "names.json", {"clusters": "stale", "names": {"0": {"name": "player"}}})
    result: dict[str, Any] = {}

    def stage() -> None:
        result["names"] = pipeline.stage_names(cfg, load_profile("arena"), clusters, urls.put)

    thread = threading.Thread(target=stage)
    thread.start()
    url = urls.get(timeout=30)
    assert url.startswith("http://127.0.0.1:")
    _, state = call(url, "/api/state")
    assert state["audit"] == [] and len(state["clusters"]) == 3  # the stale name is not kept
    for cid, name in enumerate(["player", "ignore", "portal"]):
        assert thread.is_alive()
        call(url, "/api/name", {"cluster": cid, "name": name})
    thread.join(timeout=30)
    assert result["names"] == {0: "player", 1: "ignore", 2: "portal"}
    with pytest.raises(urllib.error.URLError):  # the server ended with the stage
        urllib.request.urlopen(url + "api/state", timeout=5)


def test_ctrl_c_keeps_the_decisions_and_says_in_one_line_how_many_are_left(work: Path):
    command = [sys.executable, "-m", "bot.cli", "autolabel", "--out", str(work), "--review-only"]
    env = {**os.environ, "PILOT_LOG": "WARNING"}
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("review page: http://127.0.0.1:"), line
        url = line.split()[2]
        assert call(url, "/api/name", {"cluster": 2, "name": "bonus_box"})[0] == 200
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 1
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            "pilot autolabel: error: review stopped with 2 clusters unnamed, 3 audit items unanswered;"
        )
    )
    assert names_on_disk(work) == {"2": "bonus_box"}


def test_review_only_with_nothing_left_returns_at_once_and_a_busy_port_is_one_line(work: Path):
    fingerprint = store.read_json(work / store.CLUSTERS_META)["fingerprint"]
    names = {str(c): {"name": "ignore", "by": "test"} for c in range(3)}
    store.write_json(work / "names.json", {"clusters": fingerprint, "names": names})
    store.write_json(work / "audit" / "answers.json", {k: True for k in CONFS})
    summary = run(AutolabelConfig(out=work, review_only=True))
    assert summary["left"] == {"clusters": 0, "audit": 0} and summary["named"] == 0
    with ReviewServer(ReviewState(work, CLASSES)) as first:
        port = int(first.url.rsplit(":", 1)[1].strip("/"))
        with pytest.raises(AutolabelError, match=f"127.0.0.1:{port}: cannot serve the review page"):
            ReviewServer(ReviewState(work, CLASSES), port=port)


def test_an_audit_without_frames_gets_them_from_its_episode(work: Path, tmp_path: Path):
    """Audits written before training saved frame_<n>.png: the frames are decoded from the episode."""
    meta = EpisodeMeta(game="arena", source="expert", fps=10.0, width=W, height=H, keys=["none"])
    frames = [np.full((H, W, 3), 20 * i, np.uint8) for i in range(6)]
    with EpisodeWriter(tmp_path / "data" / "ep", meta) as writer:
        for i, frame in enumerate(frames):
            writer.append(frame, {"t": i / 10.0, "mouse_x": 0.5, "mouse_y": 0.5, "click": False, "key": 0})
    for path in (work / "audit").glob("frame_*.png"):
        path.unlink()
    audit_items(work, tmp_path / "data")
    decoded = cv2.imread(str(work / "audit" / "frame_2.png"))  # item 2 is frame 4
    assert decoded.shape == (H, W, 3) and abs(float(decoded.mean()) - 80.0) < 3.0
    shutil.rmtree(tmp_path / "data")
    (work / "audit" / "frame_2.png").unlink()
    with pytest.raises(AutolabelError, match="episode 'ep' of .*items.json not found"):
        audit_items(work, tmp_path / "data")


# ------------------------------------------------------------------------------------------------ the page


def chromium():
    """A headless Chromium driven by selenium (no X needed), or a skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium: pip install -e .[dev]")
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("chromium / chromedriver not installed (scripts/bootstrap.sh --dev installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


@pytest.fixture
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def test_a_person_names_every_cluster_and_answers_the_audit_with_keys_and_a_drag(browser, work: Path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)

    def press(*keys: str) -> None:
        ActionChains(browser).send_keys(*keys).perform()

    def showing(kind: str, ident: str) -> None:
        current = browser.find_element(By.ID, "current")
        wait.until(
            lambda _: (current.get_attribute("data-kind"), current.get_attribute("data-id")) == (kind, ident)
        )

    def on_disk(check) -> None:
        def safe(_) -> bool:
            try:
                return check()
            except (OSError, ValueError):  # a file being written as it is read: look again
                return False

        wait.until(safe)

    answers = work / "audit" / "answers.json"

    def answered() -> dict:
        return json.loads(answers.read_text()) if answers.exists() else {}

    with ReviewServer(ReviewState(work, CLASSES, audit=True)) as first:  # a first visit, left unfinished
        browser.get(first.url)
        showing("cluster", "0")
        press("3", "2")  # npc_raider, no: npc_scout (sent one after the other, saved in that order)
        on_disk(lambda: len(store.read_decisions(work)) == 2)
        assert names_on_disk(work) == {"0": "npc_scout"}
        press(Keys.ENTER)
        showing("cluster", "1")
        press("7")  # the 7th choice: ignore
        on_disk(lambda: names_on_disk(work) == {"0": "npc_scout", "1": "ignore"})
        press(Keys.ARROW_RIGHT)  # cluster 2 is skipped
        showing("cluster", "2")
        press(Keys.ARROW_RIGHT)
        showing("audit", "1")  # the least confident detection first
        press("a")
        on_disk(lambda: answered() == {"1": True})
        press(Keys.ENTER)
        showing("audit", "0")
        press("d")
        frame = browser.find_element(By.ID, "frame")
        wait.until(lambda _: browser.execute_script("return arguments[0].naturalWidth", frame) == W)
        shown_w, shown_h = frame.size["width"], frame.size["height"]
        # a drag from (1/4, 1/4) to (3/4, 5/6) of the frame: the box [16, 12, 48, 40] in frame pixels
        ActionChains(browser).move_to_element_with_offset(
            frame, -shown_w // 4, -shown_h // 4
        ).click_and_hold().move_by_offset(shown_w // 4, shown_h // 4).move_by_offset(
            shown_w // 4, shown_h // 3
        ).release().perform()
        on_disk(lambda: answered() == {"1": True, "0": False})
    redrawn = json.loads((work / "audit" / "redrawn.json").read_text())
    assert redrawn["0"]["cls"] == "npc_scout" and redrawn["0"]["frame"] == 0
    assert [redrawn["0"][k] for k in ("x1", "y1", "x2", "y2")] == pytest.approx([16, 12, 48, 40], abs=1.5)

    with ReviewServer(ReviewState(work, CLASSES, audit=True)) as second:  # the rerun shows only what is left
        browser.get(second.url)
        showing("cluster", "2")
        assert browser.execute_script(
            "return steps.map((s) => s.kind + ' ' + (s.data.id ?? s.data.item))"
        ) == [
            "cluster 2",
            "audit 2",
        ]
        press("6")  # portal
        on_disk(lambda: names_on_disk(work) == {"0": "npc_scout", "1": "ignore", "2": "portal"})
        press(Keys.ENTER)
        showing("audit", "2")
        press("r")
        on_disk(lambda: answered() == {"1": True, "0": False, "2": False})
        press(Keys.ENTER)
        showing("done", "")
        assert "Everything is decided" in browser.find_element(By.ID, "done-text").text
        assert ReviewState(work, CLASSES).left() == {"clusters": 0, "audit": 0}

    decisions = store.read_decisions(work)
    assert [(d["what"], d["subject"], d["value"]) for d in decisions] == [
        ("name cluster", "cluster 0", "npc_raider"),
        ("name cluster", "cluster 0", "npc_scout"),
        ("name cluster", "cluster 1", "ignore"),
        ("audit detection", "audit item 1", True),
        ("audit detection", "audit item 0", False),
        ("name cluster", "cluster 2", "portal"),
        ("audit detection", "audit item 2", False),
    ]
    assert all(d["human"] and d["who"] == "person (review page)" and d["seconds"] >= 0 for d in decisions)
