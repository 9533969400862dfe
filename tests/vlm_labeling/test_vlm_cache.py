"""The answer cache: keys, round trips, what is (not) cached, atomic writes and damaged entries."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from vlm_labeling.cache import AnswerCache, cache_key
from vlm_labeling.records import LabelResult, Usage
from vlm_labeling.schema import Answer

KEY_FIELDS = {
    "model": "m",
    "prompt_version": "mode_v1_00000000",
    "image_sha256s": ["a" * 64, "b" * 64],
    "hud_text": "hp_frac: 0.5",
    "objects_text": "id=3 class=npc_scout box=[1, 2, 3, 4]",
    "track_ids": [3],
}


def ok_result(key: str = "") -> LabelResult:
    return LabelResult(
        request_id="ep/1",
        status="ok",
        answer=Answer("LOOT", 0.9, 3, "flies to the box"),
        failure_reason=None,
        attempts=2,
        latency_s=1.5,
        usage=Usage(1000, 20),
        raw_excerpt='{"mode": "LOOT"}',
        cache_key=key,
        model="m",
        prompt_version="mode_v1_00000000",
    )


def failed_result() -> LabelResult:
    return LabelResult("ep/2", "failed", None, "HTTP 503 from POST http://x/chat/completions", 4, 3.0)


def test_key_changes_with_every_component():
    base = cache_key(**KEY_FIELDS)
    assert base == cache_key(**KEY_FIELDS) and len(base) == 64
    changes = {
        "model": "other",
        "prompt_version": "mode_v1_11111111",
        "image_sha256s": ["b" * 64, "a" * 64],  # order of frames matters
        "hud_text": "hp_frac: 0.6",
        "objects_text": "id=3 class=npc_raider box=[1, 2, 3, 4]",
        "track_ids": [3, 4],
    }
    for name, value in changes.items():
        assert cache_key(**{**KEY_FIELDS, name: value}) != base, name
    assert cache_key(**KEY_FIELDS, schema_version=2) != base
    assert cache_key(**{**KEY_FIELDS, "track_ids": [3]}) == cache_key(**{**KEY_FIELDS, "track_ids": (3,)})


def test_round_trip(tmp_path: Path):
    cache = AnswerCache(tmp_path)
    key = cache_key(**KEY_FIELDS)
    assert cache.get(key) is None and key not in cache
    assert cache.put(key, ok_result(key)) is True
    assert key in cache and len(cache) == 1
    assert cache.get(key) == ok_result(key)
    assert AnswerCache(tmp_path).get(key) == ok_result(key)  # a new process sees it


def test_failed_results_are_not_cached(tmp_path: Path):
    cache = AnswerCache(tmp_path)
    key = cache_key(**KEY_FIELDS)
    assert cache.put(key, failed_result()) is False
    assert cache.get(key) is None and len(cache) == 0


def test_an_interrupted_write_leaves_no_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cache = AnswerCache(tmp_path)
    key = cache_key(**KEY_FIELDS)

    def killed(fd: int) -> None:
        raise KeyboardInterrupt  # as if the run were stopped between writing and renaming

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.put(key, ok_result(key))
    monkeypatch.undo()
    assert cache.get(key) is None
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no half-written entry, no temp file


@pytest.mark.parametrize(
    "content",
    [
        '{"format": 1, "key": "',  # truncated (cannot happen through put, but a disk can fail)
        "[]",
        json.dumps({"format": 1, "key": "0" * 64, "result": {}}),  # another key
        None,  # a valid entry whose answer was edited into garbage
    ],
)
def test_damaged_entries_are_misses(tmp_path: Path, caplog: pytest.LogCaptureFixture, content):
    cache = AnswerCache(tmp_path)
    key = cache_key(**KEY_FIELDS)
    cache.put(key, ok_result(key))
    path = cache.path_for(key)
    if content is None:
        entry = json.loads(path.read_text())
        entry["result"]["answer"]["confidence"] = 7
        content = json.dumps(entry)
    path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="vlm_labeling.cache"):
        assert cache.get(key) is None
    assert "ignoring" in caplog.text
    cache.put(key, ok_result(key))  # the next answer repairs it
    assert cache.get(key) == ok_result(key)


def test_bad_keys_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="sha256"):
        AnswerCache(tmp_path).get("../../etc/passwd")
