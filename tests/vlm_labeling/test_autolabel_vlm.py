"""`pilot autolabel` names its clusters through a VLM (vlm_labeling/fake_server.py on 127.0.0.1): the
montage and the closed class list go out, answers are cached, a VLM that answers garbage names nothing."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import cv2
import pytest

from bot.cli import main as pilot
from bot.profile import load_profile
from training.autolabel_score import scripted_names
from vlm_labeling.autolabel.cli import run
from vlm_labeling.autolabel.config import AutolabelConfig
from vlm_labeling.autolabel.store import read_decisions
from vlm_labeling.cache import AnswerCache
from vlm_labeling.fake_server import FakeVLMServer, RecordedRequest, Reply, answer_reply, content_reply
from vlm_labeling.images import encode_image

pytestmark = pytest.mark.timeout(300)
PROFILE = load_profile("arena")


@pytest.fixture(scope="module")
def clustered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(episodes, work folder with clusters.json) of two 4 s demos at 320x180."""
    from bot.play.demos import DemosConfig
    from bot.play.demos import run as demos_run

    root = tmp_path_factory.mktemp("autolabel-vlm")
    demos_run(
        DemosConfig(out=root / "data", episodes=2, seconds=4, width=320, height=180, zoom=0.5, workers=1)
    )
    run(AutolabelConfig(data=root / "data", out=root / "work", review=False, stop_after="clusters"))
    return root / "data", root / "work"


@pytest.fixture
def work(clustered: tuple[Path, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(clustered[1], tmp_path / "work"))


def vlm_args(data: Path, work: Path, url: str) -> list[str]:
    return ["autolabel", "--data", str(data), "--out", str(work), "--no-review", "--vlm-url", url,
            "--vlm-model", "fake-vlm"]  # fmt: skip


def montage_sha(body: dict) -> str:
    url = next(p for p in body["messages"][1]["content"] if p["type"] == "image_url")["image_url"]["url"]
    return hashlib.sha256(base64.b64decode(url.split(",", 1)[1])).hexdigest()


class SeeingVLM:
    """Answers each montage with the name a careful person gives its cluster (found by the image's hash)."""

    def __init__(self, data: Path, work: Path) -> None:
        truth = scripted_names(work, data, PROFILE)
        self.names = {}
        for cluster in json.loads((work / "clusters.json").read_text()):
            image = encode_image(cv2.imread(str(work / cluster["montage"])), "jpeg", 85, None)
            self.names[image.sha256] = truth[str(cluster["id"])]

    def __call__(self, request: RecordedRequest) -> Reply:
        name = self.names[montage_sha(request.body)]
        return answer_reply(mode=name.upper(), confidence=0.9, target_id=None, rationale=f"looks like {name}")


def test_a_vlm_names_every_cluster_once_with_the_closed_class_list(clustered, work, tmp_path):
    data = Path(shutil.copytree(clustered[0], tmp_path / "data"))
    vlm = SeeingVLM(data, work)
    clusters = json.loads((work / "clusters.json").read_text())
    with FakeVLMServer(vlm) as server:
        assert pilot(vlm_args(data, work, server.base_url)) == 0
        assert len(server.requests) == len(clusters)
        body = server.requests[0].body
        allowed = [*(c.upper() for c in PROFILE.class_names), "IGNORE"]
        assert body["response_format"]["json_schema"]["schema"]["properties"]["mode"]["enum"] == allowed
        system, user = body["messages"][0]["content"], body["messages"][1]["content"][0]["text"]
        assert (
            all(f"- {c.upper()} (" in system for c in PROFILE.class_names) and "median_box_width_px" in user
        )
        names = json.loads((work / "names.json").read_text())["names"]
        assert {k: v["name"] for k, v in names.items()} == {
            str(k): v for k, v in scripted_names(work, data, PROFILE).items()
        }
        decisions = read_decisions(work)
        assert len(decisions) == len(clusters) and not any(d["human"] for d in decisions)
        assert all(
            d["who"] == "vlm fake-vlm" and d["seconds"] is not None and d["confidence"] == 0.9
            for d in decisions
        )
        (work / "names.json").unlink()  # named anew: every answer comes from the cache
        assert pilot(vlm_args(data, work, server.base_url)) == 0
        assert len(server.requests) == len(clusters)
    assert (data / "expert-000000" / "labels" / "boxes-auto.parquet").exists()


@pytest.mark.parametrize(
    "reply",
    [
        content_reply("It is a spaceship, I think."),  # prose without JSON
        answer_reply(mode="SPACESHIP", confidence=0.9, target_id=None),  # not an allowed name
        answer_reply(mode="PLAYER", confidence=0.1, target_id=None),  # too unsure to be taken
    ],
)
def test_a_vlm_that_answers_garbage_names_nothing_and_loses_nothing(clustered, work, capsys, reply):
    data = clustered[0]
    with FakeVLMServer(lambda request: reply) as server:
        assert pilot(vlm_args(data, work, server.base_url)) == 1
    errors = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("pilot autolabel: error:")
    ]
    assert len(errors) == 1 and "have no name" in errors[0]
    assert json.loads((work / "names.json").read_text())["names"] == {}
    answered = len(AnswerCache(work / "vlm_cache", modes=["X"]))
    assert answered == (
        len(server.requests) if "PLAYER" in json.dumps(reply.body) else 0
    )  # only valid answers
    assert (work / "clusters.json").exists() and not (
        data / "expert-000000" / "labels" / "boxes-auto.parquet"
    ).exists()
