"""Play one Arena episode with any policy that has `reset(seed)` and `act(info) -> (action, labels)`.

`play_episode` is what the tests, the benchmarks and the demonstration recorder share: the recorder passes
`on_step` to write each frame, action and label as it is played.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from arena import spec

log = logging.getLogger(__name__)

OnStep = Callable[[int, Any, dict, dict, dict], None]  # (frame_index, frame, action, labels, info)


class Policy(Protocol):
    def reset(self, seed: int | None = None) -> None: ...

    def act(self, info: dict) -> tuple[dict, dict]: ...


def play_episode(env: Any, policy: Policy, seed: int, seconds: float, on_step: OnStep | None = None) -> dict:
    """Reset `env` and `policy` with `seed`, play `seconds` of game time, return the episode's summary.

    `on_step(i, frame, action, labels, info)` is called once per frame with the frame and info the policy
    saw and the action and labels it chose from them, so a recorded row never holds the consequences of its
    own action (what behaviour cloning needs: inputs observable before the action). The episode ends early
    if the env reports terminated or truncated.
    Summary: {"seed", "frames", "seconds", "score": {"credits", "kills", "boxes", "deaths"},
    "mode_counts": {mode: frames}, "ended": "time" | "terminated" | "truncated"}.
    """
    if seconds <= 0:
        raise ValueError(f"play_episode: expected seconds > 0, got {seconds!r}")
    fps = _env_fps(env)
    frame, info = env.reset(seed=seed)
    policy.reset(seed)
    modes: Counter[str] = Counter()
    n_frames, ended = round(seconds * fps), "time"
    for i in range(n_frames):
        action, labels = policy.act(info)
        if labels.get("mode") is not None:
            modes[labels["mode"]] += 1
        if on_step is not None:
            on_step(i, frame, action, labels, info)
        frame, _reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            ended = "terminated" if terminated else "truncated"
            n_frames = i + 1
            break
    summary = {
        "seed": seed,
        "frames": n_frames,
        "seconds": n_frames / fps,
        "score": _score(info),
        "mode_counts": {m: modes.get(m, 0) for m in spec.MODES},
        "ended": ended,
    }
    log.info("episode seed=%d: %s", seed, summary["score"])
    return summary


def _env_fps(env: Any) -> float:
    """The env's frame rate: its config's fps, its metadata's render_fps, or the spec default."""
    fps = getattr(getattr(env, "cfg", None), "fps", None) or getattr(
        getattr(env, "config", None), "fps", None
    )
    if fps is None:
        fps = getattr(env, "metadata", {}).get("render_fps")
    return float(fps or spec.DEFAULT_FPS)


def _score(info: dict) -> dict:
    score = info.get("score", {})
    return {
        "credits": int(score.get("credits", 0)),
        "kills": {cls: int(score.get("kills", {}).get(cls, 0)) for cls in spec.NPC_CLASSES},
        "boxes": int(score.get("boxes", 0)),
        "deaths": int(score.get("deaths", 0)),
    }
