"""`pilot label` over perceived Arena episodes against a real HTTP server on 127.0.0.1 (fake_server.py).

The server answers from the episodes' expert labels (matched by the key frame's image hash), so every label
written can be checked against the truth; scripted replies inject prose, invalid JSON, a bad mode, HTTP 500,
429 with Retry-After, a hang past the timeout and a server that dies mid-run.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bot.cli import main as pilot
from bot.recordings.episode import LABEL_SCHEMA, find_episodes, open_episode
from bot.recordings.perceived import load_perception
from vlm_labeling.fake_server import (
    FakeVLMServer,
    GroundTruthPolicy,
    RecordedRequest,
    Reply,
    Truth,
    content_reply,
    error_reply,
    image_sha256s,
    truth_from_labels,
)
from vlm_labeling.label_config import LabelRunError, labels_name_for
from vlm_labeling.plan import key_frames

MODEL = "fake-vlm:1b"
NAME = "vlm-fake-vlm-1b"
KEYS_PER_EPISODE = 6  # 6 s episodes, one key frame per second
FAST = ["--no-progress", "--backoff-max-s", "0.01", "--timeout-s", "5"]


@pytest.fixture(scope="module")
def truth(perceived: Path) -> dict[str, Truth]:
    return truth_from_labels(perceived)


@pytest.fixture
def episodes(perceived: Path, tmp_path: Path) -> Path:
    """A private copy: labelling writes into the episode folders."""
    return Path(shutil.copytree(perceived, tmp_path / "episodes"))


def label(episodes: Path, server: FakeVLMServer, *extra: str) -> int:
    return pilot(
        ["label", "--data", str(episodes), "--base-url", server.base_url, "--model", MODEL, *FAST, *extra]
    )


def vlm_labels(episode: Path) -> list[dict]:
    return pq.read_table(episode / "labels" / f"{NAME}.parquet").to_pylist()


def key_hashes(server: FakeVLMServer) -> list[str]:
    return [image_sha256s(r)[-1] for r in server.requests]


# ------------------------------------------------------------------------------------------------ plan


def test_key_frames_are_the_last_frame_of_each_interval_with_earlier_context() -> None:
    frames = np.arange(0, 90, 2)  # perceived every 2nd frame of a 30 fps video
    plan = key_frames(frames, frames / 30.0, every_s=1.0, n_context=2, step_frames=15)
    assert [k.frame for k in plan] == [28, 58, 88]
    assert plan[0].context == (13,) and plan[1].context == (28, 43)  # none before frame 0
    assert [k.row for k in plan] == [14, 29, 44]
    assert [k.frame for k in key_frames(frames, frames / 30.0, 0.5, 0, 1)][:3] == [14, 28, 44]


def test_labels_name_is_a_safe_file_name_and_label_spec() -> None:
    assert labels_name_for("qwen2.5vl:7b") == "vlm-qwen2.5vl-7b"
    assert labels_name_for("Qwen/Qwen2.5-VL-7B-Instruct") == "vlm-Qwen-Qwen2.5-VL-7B-Instruct"


@pytest.mark.parametrize("flag", [["--every", "soon"], ["--context-frames", "-1"], ["--prompt", "mode"]])
def test_bad_settings_are_one_line_errors(
    flag: list[str], episodes: Path, server: FakeVLMServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert label(episodes, server, *flag) == 1
    err = capsys.readouterr().err
    assert "pilot label: error:" in err and flag[0] in err
    assert server.requests == []


def test_help_has_copy_paste_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        pilot(["label", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Examples" in text and "pilot label --data" in text and "--every" in text


# ------------------------------------------------------------------------------------------------ runs


def test_labels_match_the_truth_with_targets_among_the_frame_tracks(
    episodes: Path, truth: dict[str, Truth], capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeVLMServer(GroundTruthPolicy(truth)) as server:
        assert label(episodes, server) == 0
    out = capsys.readouterr().out
    assert "total" in out and f"{3 * KEYS_PER_EPISODE}" in out
    assert len(server.requests) == 3 * KEYS_PER_EPISODE
    for path in find_episodes(episodes):
        table = pq.read_table(path / "labels" / f"{NAME}.parquet")
        assert table.schema.equals(LABEL_SCHEMA)
        rows = table.to_pylist()
        perception = load_perception(path)
        seconds_end = perception["frame"][perception["summary_end"]].tolist()
        assert [r["frame"] for r in rows] == seconds_end  # exactly the Strategist's labelled frames
        expert = {r["frame"]: r["mode"] for r in open_episode(path).labels("expert").to_pylist()}
        assert all(r["mode"] == expert[r["frame"]] for r in rows)
        assert all(0.75 <= r["confidence"] <= 0.95 and r["rationale"] for r in rows)
        for r in rows:
            row = int(np.searchsorted(perception["frame"], r["frame"]))
            tracks = set(perception["track_id"][row][perception["mask"][row]].tolist())
            assert r["target_id"] is None or r["target_id"] in tracks
        record = json.loads((path / "labels" / f"{NAME}.json").read_text())
        assert (record["key_frames"], record["labelled"], record["failed"]) == (KEYS_PER_EPISODE,) * 2 + (0,)
        assert record["prompt_tokens"] == KEYS_PER_EPISODE * 1200  # as the server reported
    assert any(r["target_id"] is not None for p in find_episodes(episodes) for r in vlm_labels(p))
    user = json.dumps(server.requests[-1].body["messages"][1])
    assert "hp_frac" in user and "id=" in user  # HUD values and tracks as text
    assert max(len(image_sha256s(r)) for r in server.requests) == 3  # 2 context frames + the key frame


def test_rerun_costs_nothing_and_force_answers_from_the_cache(
    episodes: Path, truth: dict[str, Truth], capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeVLMServer(GroundTruthPolicy(truth)) as server:
        assert label(episodes, server) == 0
        first = {p.name: vlm_labels(p) for p in find_episodes(episodes)}
        assert label(episodes, server) == 0  # complete episodes are skipped
        assert "done" in capsys.readouterr().out
        assert label(episodes, server, "--force", "--json") == 0  # re-planned, every answer from the cache
        assert len(server.requests) == 3 * KEYS_PER_EPISODE
    total = json.loads(capsys.readouterr().out)["total"]
    assert (total["cache_hits"], total["labelled"], total["prompt_tokens"]) == (18, 18, None)
    assert {p.name: vlm_labels(p) for p in find_episodes(episodes)} == first


def test_api_key_comes_from_the_environment_and_is_never_written(
    episodes: Path,
    truth: dict[str, Truth],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "sk-test-5f0c2a9e77d1"
    monkeypatch.setenv("ORBIT_VLM_API_KEY", secret)
    with FakeVLMServer(GroundTruthPolicy(truth)) as server:
        assert label(episodes, server, "--json") == 0
    assert all(r.headers.get("Authorization") == f"Bearer {secret}" for r in server.requests)
    captured = capsys.readouterr()
    assert json.loads(captured.out)["total"]["labelled"] == 3 * KEYS_PER_EPISODE
    written = "".join(p.read_text(errors="ignore") for p in episodes.rglob("*.json"))
    assert secret not in captured.out + captured.err + caplog.text + written


def test_prose_invalid_json_and_bad_mode_are_handled_per_frame(
    episodes: Path, truth: dict[str, Truth], capsys: pytest.CaptureFixture[str]
) -> None:
    """Prose around the JSON is accepted; invalid JSON and a bad mode are asked again; a frame whose answers
    stay invalid fails alone (exit 1) and the rerun asks only that frame."""
    policy = GroundTruthPolicy(truth)
    stubborn: list[str] = []  # the first key frame asked: it always gets a bad mode
    lock = threading.Lock()

    def flaky(request: RecordedRequest) -> Reply:
        key = image_sha256s(request)[-1]
        with lock:
            first_ask = policy.asked[key] == 0
            answer = policy(request)
            order = len(policy.asked)  # this key frame is the order-th one asked
            stubborn.extend([] if stubborn else [key])
        if key in stubborn:
            return content_reply('{"mode": "DANCE", "confidence": 0.9, "target_id": null, "rationale": "x"}')
        content = answer.body["choices"][0]["message"]["content"]
        if first_ask and order % 3 == 0:
            return content_reply("Looking at the frames, the answer is: " + content + " Hope this helps.")
        if first_ask and order % 3 == 1:
            return content_reply(content[:-5])  # cut off: invalid JSON
        return answer

    with FakeVLMServer(flaky) as server:
        assert label(episodes, server, "--max-consecutive-failures", "0") == 1
    records = [json.loads((p / "labels" / f"{NAME}.json").read_text()) for p in find_episodes(episodes)]
    assert sum(r["failed"] for r in records) == 1 and sum(r["labelled"] for r in records) == 17
    assert any("DANCE" in reason for r in records for reason in r["failures"])
    assert policy.asked[stubborn[0]] == 3  # asked, then asked again twice (max_invalid_retries)
    cut_off = [k for k, n in policy.asked.items() if n == 2]
    assert len(cut_off) == 5  # key frames 4, 7, 10, 13, 16 were cut off once, then answered
    prose = [k for k, n in policy.asked.items() if n == 1]
    assert len(prose) == 12  # prose-wrapped (6 of them) or plain: accepted at once
    labelled = [r for p in find_episodes(episodes) for r in vlm_labels(p)]
    assert len(labelled) == 17
    with FakeVLMServer(GroundTruthPolicy(truth)) as fixed:
        assert label(episodes, fixed) == 0
    assert key_hashes(fixed) == stubborn  # only the failed frame is asked again
    assert sum(len(vlm_labels(p)) for p in find_episodes(episodes)) == 18


def test_http_500_and_429_with_retry_after_are_retried(episodes: Path, truth: dict[str, Truth]) -> None:
    with FakeVLMServer(GroundTruthPolicy(truth)) as server:
        server.enqueue(
            error_reply(500), error_reply(429, "slow down", {"Retry-After": "0.05"}), error_reply(503)
        )
        assert label(episodes, server, "--max-concurrency", "1") == 0
    assert len(server.requests) == 3 * KEYS_PER_EPISODE + 3
    assert sum(len(vlm_labels(p)) for p in find_episodes(episodes)) == 3 * KEYS_PER_EPISODE


def test_a_hang_past_the_timeout_is_retried(episodes: Path, truth: dict[str, Truth]) -> None:
    with FakeVLMServer(GroundTruthPolicy(truth)) as server:
        server.enqueue(Reply(delay_s=5.0, body={"never": "sent in time"}))
        code = pilot(["label", "--data", str(episodes), "--base-url", server.base_url, "--model", MODEL,
                      "--no-progress", "--backoff-max-s", "0.01", "--timeout-s", "0.5"])  # fmt: skip
    assert code == 0
    assert len(server.requests) == 3 * KEYS_PER_EPISODE + 1
    assert sum(len(vlm_labels(p)) for p in find_episodes(episodes)) == 3 * KEYS_PER_EPISODE


def test_server_death_mid_run_then_rerun_resumes_without_asking_twice(
    episodes: Path, truth: dict[str, Truth], capsys: pytest.CaptureFixture[str]
) -> None:
    policy = GroundTruthPolicy(truth)
    answered: set[str] = set()
    lock = threading.Lock()

    def dies_after_eight(request: RecordedRequest) -> Reply:
        with lock:
            if len(answered) >= 8:
                return Reply(die=True)
            answered.add(image_sha256s(request)[-1])
        return policy(request)

    with FakeVLMServer(dies_after_eight) as server:
        code = label(episodes, server, "--max-retries", "1", "--max-consecutive-failures", "3")
    assert code == 1
    assert "stopped after 3 failed key frames in a row" in capsys.readouterr().err
    assert len(answered) == 8
    with FakeVLMServer(GroundTruthPolicy(truth)) as second:
        assert label(episodes, second) == 0
    asked_again = key_hashes(second)
    assert len(asked_again) == len(set(asked_again)) == 3 * KEYS_PER_EPISODE - 8  # each missing frame once
    assert not set(asked_again) & answered  # nothing answered before is asked (or paid for) again
    rows = [r for p in find_episodes(episodes) for r in vlm_labels(p)]
    assert len(rows) == 3 * KEYS_PER_EPISODE


def test_missing_episodes_is_an_error(tmp_path: Path) -> None:
    from vlm_labeling.label_config import LabelConfig
    from vlm_labeling.run import run

    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelRunError, match="no episodes"):
        run(LabelConfig(data=tmp_path / "empty", base_url="http://127.0.0.1:9/v1"))
