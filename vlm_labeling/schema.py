"""The answer the VLM must give, as a JSON Schema and as a validated `Answer`.

    {"mode": "FIGHT", "confidence": 0.8, "target_id": 7, "rationale": "an NPC is attacking the ship"}

`answer_schema()` is for strict structured output; `parse_answer` is the only way an answer becomes an
`Answer` (else InvalidAnswer with the reason); `extract_json_object` finds the one JSON object in prose.
Why the schema has this shape: docs/notes/vlm_labeling.md, "vlm_labeling/schema.py".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from vlm_labeling.errors import InvalidAnswer

# The Strategist's modes (the Mode contract; arena/spec.py MODES and the game profiles list the same).
MODES: tuple[str, ...] = ("FIGHT", "LOOT", "FLEE", "EXPLORE", "CAUTIOUS")
SCHEMA_NAME = "orbit_pilot_mode_label"
# Bump when the answer's keys or their meaning change; it is part of every cache key.
SCHEMA_VERSION = 1
ANSWER_KEYS: tuple[str, ...] = ("mode", "confidence", "target_id", "rationale")
# Longer rationales are cut, not rejected: the text is for people reading labels, not for training.
RATIONALE_MAX_CHARS = 300

_JSON_TYPES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5|javascript)?[ \t]*\n?(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Answer:
    """One validated label: a mode, how sure the model is, and the chosen track id (None = no target)."""

    mode: str
    confidence: float
    target_id: int | None
    rationale: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], modes: Iterable[str] = MODES) -> Answer:
        """Rebuild an answer (e.g. from the cache), validating it again; target ids are not re-checked."""
        return parse_answer(dict(data), None, modes=modes)


def answer_schema(modes: Iterable[str] = MODES) -> dict[str, Any]:
    """The JSON Schema of an answer (strict-mode compatible)."""
    return {
        "type": "object",
        "properties": {
            "mode": {
                "type": "string",
                "enum": list(modes),
                "description": "The play mode the player is in at the key frame.",
            },
            "confidence": {
                "type": "number",
                "description": "How sure you are of the mode, from 0.0 (guess) to 1.0 (certain).",
            },
            "target_id": {
                "type": ["integer", "null"],
                "description": "Track id of the object the player is acting on, or null if none.",
            },
            "rationale": {
                "type": "string",
                "description": "One short sentence saying what in the frames shows this mode.",
            },
        },
        "required": list(ANSWER_KEYS),
        "additionalProperties": False,
    }


def response_format(modes: Iterable[str] = MODES) -> dict[str, Any]:
    """The chat-completions `response_format` value asking for `answer_schema()` strictly."""
    return {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "schema": answer_schema(modes), "strict": True},
    }


def parse_answer(
    content: str | Mapping[str, Any],
    valid_track_ids: set[int] | frozenset[int] | None,
    *,
    modes: Iterable[str] = MODES,
    lenient: bool = False,
) -> Answer:
    """Validate a model answer and return it as an `Answer`, or raise `InvalidAnswer` saying why not.

    content: the message text (a JSON object; with `lenient=True` the object may sit inside prose or a
        ```json fence) or an already decoded mapping.
    valid_track_ids: the track ids of the labelled frame; `target_id` must be one of them or null. None
        skips that membership check (the type is still checked).
    """
    data = _as_mapping(content, lenient)
    _check_keys(data)
    return Answer(
        mode=_parse_mode(data["mode"], modes),
        confidence=_parse_confidence(data["confidence"]),
        target_id=_parse_target(data["target_id"], valid_track_ids),
        rationale=_parse_rationale(data["rationale"]),
    )


def extract_json_object(text: str) -> dict[str, Any]:
    """Find the answer object in free text: bare, inside ```json fences, or with prose around it.

    Objects with a "mode" key are preferred; if several different candidates remain the answer is ambiguous
    and rejected rather than guessed.
    """
    if not isinstance(text, str):
        raise InvalidAnswer(f"expected the answer as text, got {type(text).__name__}")
    if not text.strip():
        raise InvalidAnswer("the answer is empty")
    fenced = [m.group(1) for m in _FENCE.finditer(text)]
    objects = _unique([obj for block in fenced for obj in _objects_in(block)])
    if not objects:
        objects = _unique(_objects_in(text))
    if not objects:
        raise InvalidAnswer(f"no complete JSON object found in the answer: {_excerpt(text)}")
    with_mode = [obj for obj in objects if "mode" in obj]
    if len(with_mode) == 1:
        return with_mode[0]
    if len(with_mode) > 1:
        raise InvalidAnswer(f"the answer holds {len(with_mode)} different JSON objects with a 'mode' key")
    if len(objects) == 1:
        return objects[0]  # parse_answer will name the missing key
    raise InvalidAnswer(f"the answer holds {len(objects)} JSON objects and none has a 'mode' key")


def load_json_object(text: str) -> dict[str, Any]:
    """Decode `text` as exactly one JSON object (what a server with structured output returns)."""
    if not isinstance(text, str):
        raise InvalidAnswer(f"expected the answer as text, got {type(text).__name__}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidAnswer(
            f"the answer is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}): "
            f"{_excerpt(text)}"
        ) from None
    if not isinstance(data, dict):
        raise InvalidAnswer(f"expected a JSON object, got a JSON {_JSON_TYPES.get(type(data), 'value')}")
    return data


def _as_mapping(content: str | Mapping[str, Any], lenient: bool) -> Mapping[str, Any]:
    if isinstance(content, Mapping):
        return content
    if not isinstance(content, str):
        raise InvalidAnswer(f"expected the answer as text or a JSON object, got {type(content).__name__}")
    return extract_json_object(content) if lenient else load_json_object(content)


def _check_keys(data: Mapping[str, Any]) -> None:
    missing = [key for key in ANSWER_KEYS if key not in data]
    if missing:
        raise InvalidAnswer(f"missing key(s) {missing}; expected exactly {list(ANSWER_KEYS)}")
    # The schema forbids extra keys; one (e.g. "target" next to "target_id") usually means the model
    # misread the format, so the answer is asked again rather than half-trusted.
    extra = sorted(str(key) for key in data if key not in ANSWER_KEYS)
    if extra:
        raise InvalidAnswer(f"unexpected key(s) {extra}; expected exactly {list(ANSWER_KEYS)}")


def _parse_mode(value: Any, modes: Iterable[str]) -> str:
    allowed = tuple(modes)
    if not isinstance(value, str):
        raise InvalidAnswer(f"mode must be a string, got {type(value).__name__} {value!r}")
    mode = value.strip().upper()
    if mode not in allowed:
        raise InvalidAnswer(f"mode {value!r} is not one of {list(allowed)}")
    return mode


def _parse_confidence(value: Any) -> float:
    # bool is an int in Python, but `true` is not a confidence.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidAnswer(f"confidence must be a number, got {type(value).__name__} {value!r}")
    confidence = float(value)
    if not math.isfinite(confidence):
        raise InvalidAnswer(f"confidence must be finite, got {value!r}")
    if not 0.0 <= confidence <= 1.0:
        raise InvalidAnswer(f"confidence {value!r} is outside [0, 1]")
    return confidence


def _parse_target(value: Any, valid_track_ids: set[int] | frozenset[int] | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAnswer(f"target_id must be an integer or null, got {type(value).__name__} {value!r}")
    if valid_track_ids is not None and value not in valid_track_ids:
        raise InvalidAnswer(f"target_id {value} is not among the frame's track ids {sorted(valid_track_ids)}")
    return value


def _parse_rationale(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidAnswer(f"rationale must be a string, got {type(value).__name__}")
    return value.strip()[:RATIONALE_MAX_CHARS]


def _objects_in(text: str) -> list[dict[str, Any]]:
    """Every top-level JSON object that decodes cleanly somewhere in `text`, left to right."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    start = text.find("{")
    while start != -1:
        try:
            obj, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        found.append(obj)  # raw_decode at "{" can only produce a dict
        start = text.find("{", end)
    return found


def _unique(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop repeats (a model that writes its answer twice is not ambiguous)."""
    seen: set[str] = set()
    out = []
    for obj in objects:
        key = json.dumps(obj, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(obj)
    return out


def _excerpt(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "...")
