"""Fixtures of the VLM labelling tests: a fake chat-completions server, a client factory with tiny back-off
and a cache in tmp_path. No ambient API key leaks in from the environment."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vlm_labeling.cache import AnswerCache
from vlm_labeling.client import VLMClient
from vlm_labeling.client_config import ClientConfig
from vlm_labeling.fake_server import FakeVLMServer
from vlm_labeling.records import LabelRequest, TrackedObject

KEY_ENV = "ORBIT_VLM_API_KEY"


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without a key unless they set one."""
    monkeypatch.delenv(KEY_ENV, raising=False)


@pytest.fixture
def server() -> Iterator[FakeVLMServer]:
    with FakeVLMServer() as fake:
        yield fake


@pytest.fixture
def sleeps() -> list[float]:
    """Back-off delays the client asked for (the fixture's sleep does not really wait)."""
    return []


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "vlm_cache"


@pytest.fixture
def make_client(cache_dir: Path, sleeps: list[float]) -> Callable[..., VLMClient]:
    """Client factory: tiny back-off, 2 s timeouts, a cache in tmp_path (cache=False for none)."""

    def make(fake: FakeVLMServer, cache: bool = True, **overrides: Any) -> VLMClient:
        fields: dict[str, Any] = {
            "base_url": fake.base_url,
            "model": "fake-vlm",
            "timeout_s": 2.0,
            "max_concurrency": 2,
            "max_retries": 3,
            "max_invalid_retries": 2,
            "backoff_base_s": 0.001,
            "backoff_max_s": 0.005,
            "retry_after_max_s": 5.0,
        }
        fields.update(overrides)
        return VLMClient(
            ClientConfig(**fields), cache=AnswerCache(cache_dir) if cache else None, sleep=sleeps.append
        )

    return make


@pytest.fixture
def make_frame() -> Callable[..., np.ndarray]:
    return frame


@pytest.fixture
def make_request() -> Callable[..., LabelRequest]:
    return request_for


def frame(seed: int, height: int = 36, width: int = 48) -> np.ndarray:
    """A small BGR frame, different for every seed."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def request_for(index: int, n_context: int = 1, track_ids: tuple[int, ...] = (7, 9)) -> LabelRequest:
    objects = [TrackedObject(t, "npc_scout", (1.0 + t, 2.0, 11.0 + t, 12.0)) for t in track_ids]
    return LabelRequest(
        key_frame=frame(1000 + index),
        context_frames=[frame(2000 + 10 * index + k) for k in range(n_context)],
        hud={"hp_frac": 0.75, "shield_frac": 0.5, "credits": 1200},
        objects=objects,
        request_id=f"episode_0/frame_{index:04d}",
    )
