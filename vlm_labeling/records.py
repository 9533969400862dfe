"""What crosses the client boundary: the question (`LabelRequest`, `TrackedObject`) and the outcome
(`LabelResult`, `Usage`), with the JSON round trip the answer cache uses.

A request carries the key frame to label, a few context frames before it (oldest first), the HUD values read
at the key frame and the tracked objects at the key frame; their ids are the only allowed targets.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from vlm_labeling.errors import RequestError
from vlm_labeling.images import is_image
from vlm_labeling.schema import MODES, Answer

HudValue = float | int | str | bool
Status = Literal["ok", "failed"]


@dataclass(frozen=True)
class TrackedObject:
    """One tracked object at the key frame. `box` is (x1, y1, x2, y2) in key-frame pixels."""

    track_id: int
    cls: str
    box: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        # numpy integers (ByteTrack ids, parquet columns) are accepted and stored as int.
        if isinstance(self.track_id, bool) or not isinstance(self.track_id, numbers.Integral):
            raise RequestError(f"TrackedObject.track_id: expected an int, got {self.track_id!r}")
        object.__setattr__(self, "track_id", int(self.track_id))
        if not isinstance(self.cls, str) or not self.cls:
            raise RequestError(f"TrackedObject.cls: expected a class name, got {self.cls!r}")
        try:
            box = tuple(float(v) for v in self.box)
        except (TypeError, ValueError):
            box = ()
        if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] < box[0] or box[3] < box[1]:
            raise RequestError(
                f"TrackedObject.box: expected finite (x1, y1, x2, y2) with x1<=x2, y1<=y2, got {self.box!r}"
            )
        object.__setattr__(self, "box", box)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TrackedObject:
        """Accept the Arena's `info["objects"]` items ({"id", "cls", "box", ...}) and similar dicts."""
        track_id = data.get("track_id", data.get("id"))
        return cls(track_id=track_id, cls=data.get("cls", data.get("class")), box=data.get("box"))

    def describe(self, scale: float = 1.0) -> str:
        x1, y1, x2, y2 = (round(v * scale) for v in self.box)
        return f"id={self.track_id} class={self.cls} box=[{x1}, {y1}, {x2}, {y2}]"


@dataclass(frozen=True, eq=False, repr=False)
class LabelRequest:
    """One key frame to label. Frames are numpy BGR images or PNG/JPEG bytes (see `images.py`)."""

    key_frame: Any
    context_frames: Sequence[Any] = ()  # oldest first, all before the key frame
    hud: Mapping[str, HudValue] = field(default_factory=dict)  # HUD values at the key frame
    objects: Sequence[TrackedObject | Mapping[str, Any]] = ()  # tracks at the key frame; allowed targets
    request_id: str = ""  # the caller's handle (e.g. "episode_0003/frame_000120"), copied into the result

    def __post_init__(self) -> None:
        if not is_image(self.key_frame):
            raise RequestError(
                f"LabelRequest.key_frame: expected a numpy image or PNG/JPEG bytes, "
                f"got {type(self.key_frame).__name__}"
            )
        frames = tuple(self.context_frames)
        for i, frame in enumerate(frames):
            if not is_image(frame):
                raise RequestError(
                    f"LabelRequest.context_frames[{i}]: expected a numpy image or PNG/JPEG "
                    f"bytes, got {type(frame).__name__}"
                )
        objects = tuple(
            o if isinstance(o, TrackedObject) else TrackedObject.from_mapping(o) for o in self.objects
        )
        ids = [o.track_id for o in objects]
        if len(set(ids)) != len(ids):
            raise RequestError(f"LabelRequest.objects: duplicate track ids in {ids}")
        object.__setattr__(self, "context_frames", frames)
        object.__setattr__(self, "objects", objects)
        object.__setattr__(self, "hud", {_hud_key(k): _hud_value(k, v) for k, v in dict(self.hud).items()})

    @property
    def track_ids(self) -> frozenset[int]:
        return frozenset(o.track_id for o in self.objects)

    def hud_text(self) -> str:
        """HUD values as "name: value" lines, in the order given (floats to 4 significant digits)."""
        if not self.hud:
            return "(none)"
        return "\n".join(f"{name}: {_format_value(value)}" for name, value in self.hud.items())

    def objects_text(self, scale: float = 1.0) -> str:
        """One line per object; `scale` maps boxes onto the key frame as sent (when it was shrunk)."""
        if not self.objects:
            return "(none)"
        return "\n".join(o.describe(scale) for o in self.objects)

    def __repr__(self) -> str:  # the default repr would print whole images
        return (
            f"LabelRequest(request_id={self.request_id!r}, context_frames={len(self.context_frames)}, "
            f"objects={len(self.objects)}, hud={sorted(self.hud)})"
        )


@dataclass(frozen=True)
class Usage:
    """Tokens the server reported, summed over a request's attempts; None where it reported nothing."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            _add(self.prompt_tokens, other.prompt_tokens),
            _add(self.completion_tokens, other.completion_tokens),
        )


@dataclass(frozen=True)
class LabelResult:
    """The outcome of one request. `status == "ok"` exactly when `answer` is set."""

    request_id: str
    status: Status
    answer: Answer | None
    failure_reason: str | None  # one line; None when ok
    attempts: int  # HTTP requests made for this result (0 for a cache hit)
    latency_s: float  # wall time of the whole call, retries and back-off included
    usage: Usage = Usage()
    raw_excerpt: str = ""  # start of the last model answer, for debugging (never holds the key)
    cached: bool = False  # served from the answer cache
    cache_key: str = ""
    model: str = ""
    prompt_version: str = ""

    def __post_init__(self) -> None:
        if self.status not in ("ok", "failed"):
            raise ValueError(f"LabelResult.status: expected 'ok' or 'failed', got {self.status!r}")
        if (self.status == "ok") != (self.answer is not None) or (self.status == "ok") == bool(
            self.failure_reason
        ):
            raise ValueError(
                f"LabelResult: status {self.status!r} needs an answer exactly when ok and a "
                f"failure_reason exactly when failed, got answer={self.answer!r}, "
                f"failure_reason={self.failure_reason!r}"
            )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "status": self.status,
            "answer": None if self.answer is None else self.answer.to_dict(),
            "failure_reason": self.failure_reason,
            "attempts": self.attempts,
            "latency_s": self.latency_s,
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
            },
            "raw_excerpt": self.raw_excerpt,
            "cached": self.cached,
            "cache_key": self.cache_key,
            "model": self.model,
            "prompt_version": self.prompt_version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], modes: Iterable[str] = MODES) -> LabelResult:
        """Inverse of `to_dict`; the answer is validated again, so a tampered entry cannot become a label."""
        answer = data.get("answer")
        usage = data.get("usage") or {}
        return cls(
            request_id=str(data.get("request_id", "")),
            status=data["status"],
            answer=None if answer is None else Answer.from_dict(answer, modes),
            failure_reason=data.get("failure_reason"),
            attempts=int(data.get("attempts", 0)),
            latency_s=float(data.get("latency_s", 0.0)),
            usage=Usage(usage.get("prompt_tokens"), usage.get("completion_tokens")),
            raw_excerpt=str(data.get("raw_excerpt", "")),
            cached=bool(data.get("cached", False)),
            cache_key=str(data.get("cache_key", "")),
            model=str(data.get("model", "")),
            prompt_version=str(data.get("prompt_version", "")),
        )


def _add(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else a + b


def _hud_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise RequestError(f"LabelRequest.hud: expected names as non-empty strings, got {key!r}")
    return key


def _hud_value(key: str, value: Any) -> HudValue:
    """Plain Python values (numpy scalars from parquet or OpenCV become int/float)."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise RequestError(f"LabelRequest.hud[{key!r}]: expected a number, string or bool, got {value!r}")


def _format_value(value: HudValue) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
