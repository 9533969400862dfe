"""`pilot label`: ask a vision-language model for the mode (and target) at key moments of recorded episodes.

    episode ──plan: the last perceived frame of every `--every` s (+ K earlier context frames)──┐
       │                                                                                        ▼
       └─ video decoded once, in order ─▶ LabelRequest(key frame, context, HUD text, tracks) ─▶ VLMClient
                                                   (cache hit: no request) ◀── AnswerCache ◀──┘
    ok answers ─▶ <episode>/labels/vlm-<model>.parquet  (frame, mode, target_id, confidence, rationale)
    run record ─▶ <episode>/labels/vlm-<model>.json     (settings, counts, tokens; never the API key)

Key frames are the last perceived frame of each `--every` interval of episode time, so with the default 1 s
they are exactly the frames whose label the Strategist learns (one summary per whole second,
bot/perception/state.py).
The HUD values (as perception read them) and the tracked objects at the key frame go into the prompt as text;
a `target_id` must be one of those track ids, so it names an object the Tactician can choose.

Cost and resumption: every validated answer is cached on disk by (model, prompt version, image hashes, HUD
and object text) (vlm_labeling/cache.py), so a rerun, or a run resumed after Ctrl+C, a crash or a dead
server, sends only the questions not yet answered. An episode whose run record says it is complete with the
same settings is skipped without decoding its video. The API key is read from the environment variable named
by `--api-key-env` (default ORBIT_VLM_API_KEY) and never printed or written.

Exit code 0 when every key frame got a label; 1 when some failed (rerun to retry only those), when the run
stopped after `--max-consecutive-failures` failures in a row (a dead or misconfigured server), or on a bad
setting.

Examples (episodes perceived first: `pilot perceive --episodes data/recordings/arena --detector ...`):

    ollama pull qwen2.5vl:7b    # then, with `ollama serve` running:
    pilot label --data data/recordings/arena --base-url http://127.0.0.1:11434/v1 --model qwen2.5vl:7b
    pilot label --data data/recordings/arena --base-url http://127.0.0.1:8000/v1 \\
        --model Qwen/Qwen2.5-VL-7B-Instruct --every 2s --context-frames 3 --max-concurrency 8
    export ORBIT_VLM_API_KEY=...   # read from the environment only
    pilot label --data data/recordings/darkorbit --base-url https://api.openai.com/v1 --model gpt-4o-mini \\
        --max-image-side 768 --json
    finetune_vlm --policy data/pretrained/arena --data data/recordings/arena --labels vlm-qwen2.5vl-7b \\
        --out data/policies/arena-vlm    # then fine-tune on the labels (training/finetune.py)
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.parquet as pq
import tyro

from bot.errors import PerceptionError, PilotError
from bot.recordings.episode import Episode, find_episodes, open_episode, write_labels
from bot.recordings.perceived import FOLDER as PERCEPTION_FOLDER
from bot.recordings.perceived import PerceivedEpisode, load_perception
from vlm_labeling.cache import AnswerCache
from vlm_labeling.client import ClientConfig, VLMClient
from vlm_labeling.errors import VLMError
from vlm_labeling.prompts import Prompt, load_prompt
from vlm_labeling.records import LabelRequest, LabelResult, TrackedObject

log = logging.getLogger(__name__)

RECORD_FORMAT = 1
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|f)?\s*$")
_PROMPT = re.compile(r"^([a-z][a-z0-9_]*)_v(\d+)$")
# The run record fields that must match for an episode to count as already labelled.
_SAME_RUN = ("model", "prompt", "every_s", "context_frames", "context_step_s", "image")


class LabelRunError(PilotError):
    """A labelling run cannot start or had to stop (one line: what and why)."""


@dataclass
class LabelConfig:
    """Label recorded episodes with a vision-language model through an OpenAI-compatible API."""

    data: Path  # an episode folder, or a folder searched for episodes
    base_url: str = "http://127.0.0.1:11434/v1"  # API root; /chat/completions is appended (Ollama's default)
    model: str = "qwen2.5vl:7b"  # model name as the server knows it
    every: str = "1s"  # key-frame spacing: "<seconds>s" (e.g. 1s, 0.5s) or "<frames>f" (e.g. 30f)
    context_frames: int = 2  # earlier frames sent before each key frame (0 = the key frame only)
    context_step: str = "0.5s"  # spacing of the context frames, same units as --every
    prompt: str = "mode_v1"  # prompt file vlm_labeling/prompts/<name>_v<N>.md
    name: str = ""  # labels file labels/<name>.parquet; "" = vlm-<model> with unsafe characters as '-'
    cache: Path | None = None  # answer cache folder; None = <data>/.vlm_cache
    api_key_env: str = "ORBIT_VLM_API_KEY"  # NAME of the env variable holding the key (unset = no auth)
    timeout_s: float = 120.0  # s per socket operation; CPU-served VLMs are slow
    max_concurrency: int = 4  # requests in flight at once
    max_retries: int = 4  # retries after 429 / 5xx / timeouts / connection errors, per key frame
    backoff_max_s: float = 30.0  # s, ceiling of the back-off between retries
    structured_output: Literal["auto", "json_schema", "off"] = "auto"  # response_format json_schema use
    max_image_side: int | None = None  # px; frames are shrunk so their longer side fits; None = as recorded
    jpeg_quality: int = 85  # 1..100
    limit: int = 0  # key frames per episode at most (the first ones); 0 = all
    max_consecutive_failures: int = 20  # stop the run after this many failed key frames in a row; 0 = never
    force: bool = False  # process episodes whose run record says they are done (answers still come cached)
    json: bool = False  # print the summary as JSON instead of a table
    progress: bool = True  # progress bar

    def __post_init__(self) -> None:
        self.data = Path(self.data)
        self.cache = None if self.cache in (None, "") else Path(self.cache)
        _parse_interval(self.every, "every")
        _parse_interval(self.context_step, "context_step")
        _parse_prompt(self.prompt)
        for name, low in (("context_frames", 0), ("limit", 0), ("max_consecutive_failures", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise LabelRunError(
                    f"--{name.replace('_', '-')}: expected an integer >= {low}, got {value!r}"
                )
        if self.name and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", self.name):
            raise LabelRunError(f"--name: expected letters, digits, '.', '_' or '-', got {self.name!r}")

    @property
    def labels_name(self) -> str:
        return self.name or labels_name_for(self.model)

    @property
    def cache_dir(self) -> Path:
        return self.cache or self.data / ".vlm_cache"

    def client_config(self) -> ClientConfig:
        return ClientConfig(
            base_url=self.base_url,
            model=self.model,
            api_key_env=self.api_key_env,
            timeout_s=self.timeout_s,
            max_concurrency=self.max_concurrency,
            max_retries=self.max_retries,
            backoff_max_s=self.backoff_max_s,
            structured_output=self.structured_output,
            max_image_side=self.max_image_side,
            jpeg_quality=self.jpeg_quality,
        )


def labels_name_for(model: str) -> str:
    """ "qwen2.5vl:7b" -> "vlm-qwen2.5vl-7b": a file name that also parses as a label source spec."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-.") or "model"
    return f"vlm-{slug}"


def _parse_interval(spec: str, name: str) -> tuple[float, str]:
    match = _EVERY.match(str(spec))
    if not match or float(match.group(1)) <= 0:
        raise LabelRunError(f"--{name.replace('_', '-')}: expected e.g. 1s, 0.5s or 30f (> 0), got {spec!r}")
    return float(match.group(1)), match.group(2) or "s"


def _interval_s(spec: str, fps: float) -> float:
    value, unit = _parse_interval(spec, "every")
    return value if unit == "s" else value / fps


def _parse_prompt(spec: str) -> tuple[str, int]:
    match = _PROMPT.match(spec)
    if not match:
        raise LabelRunError(f"--prompt: expected <name>_v<N> (e.g. mode_v1), got {spec!r}")
    return match.group(1), int(match.group(2))


# ------------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class KeyFrame:
    """One question: the key frame's index in the video and its context frames (oldest first)."""

    frame: int
    context: tuple[int, ...]
    row: int  # perception row of the key frame (-1 without perception)


@dataclass
class EpisodeInputs:
    """What one episode gives the prompts: its key frames, and the HUD and tracks at each of them."""

    episode: Episode
    keys: list[KeyFrame]
    perception: PerceivedEpisode | None
    tracks: list[list[dict[str, Any]]] | None  # tracks.parquet rows, per perception row
    hud_rows: list[dict[str, Any]] | None  # tracks.parquet HUD columns (perceived) or steps columns
    class_names: list[str]


def key_frames(
    frames: np.ndarray, times: np.ndarray, every_s: float, n_context: int, step_frames: int
) -> list[KeyFrame]:
    """The last of `frames` in each `every_s` interval of `times`, with `n_context` earlier video frames."""
    if len(frames) == 0:
        return []
    bucket = np.floor(times / every_s + 1e-9).astype(np.int64)
    last = np.flatnonzero(np.append(bucket[1:] != bucket[:-1], True))  # rows ending a bucket
    plan = []
    for row in last:
        key = int(frames[row])
        context = sorted(
            {key - j * step_frames for j in range(1, n_context + 1) if key - j * step_frames >= 0}
        )
        plan.append(KeyFrame(key, tuple(context), int(row)))
    return plan


def plan_episode(path: Path, cfg: LabelConfig) -> EpisodeInputs:
    """Key frames (from the perceived frames when `pilot perceive` ran, else every video frame) and inputs."""
    episode = open_episode(path)
    fps = float(episode.meta.fps)
    step_frames = max(1, round(_interval_s(cfg.context_step, fps) * fps))
    perception, tracks, hud = _perception_inputs(path)
    if perception is not None:
        frames, times = perception["frame"].astype(np.int64), perception["t"].astype(np.float64)
    else:
        steps = episode.steps()
        frames = steps.column("frame").to_numpy().astype(np.int64)
        times = steps.column("t").to_numpy().astype(np.float64)
        hud = _steps_hud(episode)
    keys = key_frames(frames, times, _interval_s(cfg.every, fps), cfg.context_frames, step_frames)
    if cfg.limit:
        keys = keys[: cfg.limit]
    return EpisodeInputs(episode, keys, perception, tracks, hud, _class_names(episode, perception))


def _perception_inputs(path: Path) -> tuple[PerceivedEpisode | None, list | None, list | None]:
    if not (path / PERCEPTION_FOLDER).is_dir():
        log.warning(
            "%s: not perceived: no tracks in the prompt, HUD from the steps if recorded (run pilot perceive)",
            path.name,
        )
        return None, None, None
    perception = load_perception(path)
    table = pq.read_table(path / PERCEPTION_FOLDER / "tracks.parquet")
    if table.num_rows != len(perception):
        raise PerceptionError(
            f"{path / PERCEPTION_FOLDER}: tracks.parquet and obs.npz disagree; re-run perception"
        )
    hud_columns = [c for c in ("hp", "shield", "map_x", "map_y") if c in table.column_names]
    return perception, table.column("tracks").to_pylist(), table.select(hud_columns).to_pylist()


def _steps_hud(episode: Episode) -> list[dict[str, Any]] | None:
    steps = episode.steps()
    columns = [c for c in ("hp", "shield", "credits") if c in steps.column_names]
    return steps.select(columns).to_pylist() if columns else None


def _class_names(episode: Episode, perception: PerceivedEpisode | None) -> list[str]:
    from bot.profile import load_profile

    game = (perception.meta.get("game") if perception is not None else None) or episode.meta.game
    try:
        return load_profile(game).class_names
    except (PilotError, OSError, ValueError):
        return list(episode.meta.classes)


HUD_NAMES = {"hp": "hp_frac", "shield": "shield_frac", "map_x": "minimap_x", "map_y": "minimap_y"}


def hud_values(row: dict[str, Any] | None) -> dict[str, float | int]:
    """HUD text values: hp/shield as fractions, minimap position; unread (NaN / null) values left out."""
    out: dict[str, float | int] = {}
    for name, value in (row or {}).items():
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        out[HUD_NAMES.get(name, name)] = value
    return out


def objects_at(inputs: EpisodeInputs, row: int) -> list[TrackedObject]:
    """Tracks at perception row `row` that are in the Observation's object set (the Tactician's choices)."""
    if inputs.perception is None or inputs.tracks is None:
        return []
    p = inputs.perception
    in_set = set(p["track_id"][row][p["mask"][row]].tolist())
    objects = []
    for track in inputs.tracks[row]:
        if track["id"] not in in_set or not track.get("visible", True):
            continue
        cls = int(track["cls"])
        name = inputs.class_names[cls] if 0 <= cls < len(inputs.class_names) else f"class{cls}"
        objects.append(
            TrackedObject(int(track["id"]), name, (track["x1"], track["y1"], track["x2"], track["y2"]))
        )
    return objects


def requests(inputs: EpisodeInputs) -> Iterator[LabelRequest]:
    """The episode's LabelRequests, decoding the video once in order and holding only frames still needed."""
    keys = inputs.keys
    if not keys:
        return
    wanted = {f for k in keys for f in (*k.context, k.frame)}
    held: dict[int, np.ndarray] = {}
    position = 0
    for index, rgb in inputs.episode.frames(stop=keys[-1].frame + 1):
        if index in wanted:
            held[index] = np.ascontiguousarray(rgb[..., ::-1])  # the client encodes BGR (OpenCV order)
        while position < len(keys) and keys[position].frame == index:
            yield _request(inputs, keys[position], held)
            position += 1
            # contexts grow with their key frame, so the next key frame's oldest context is the floor
            floor = (
                min((*keys[position].context, keys[position].frame)) if position < len(keys) else index + 1
            )
            for old in [f for f in held if f < floor]:
                del held[old]
    if position < len(keys):
        raise LabelRunError(
            f"{inputs.episode.dir}: the video ended before key frame {keys[position].frame} "
            f"({len(keys) - position} key frames left)"
        )


def _request(inputs: EpisodeInputs, key: KeyFrame, held: dict[int, np.ndarray]) -> LabelRequest:
    if inputs.hud_rows is None:
        hud_row = None
    else:
        hud_row = inputs.hud_rows[key.row] if inputs.perception is not None else inputs.hud_rows[key.frame]
    return LabelRequest(
        key_frame=held[key.frame],
        context_frames=[held[f] for f in key.context if f in held],
        hud=hud_values(hud_row),
        objects=objects_at(inputs, key.row) if key.row >= 0 else [],
        request_id=request_id(inputs.episode.name, key.frame),
    )


def request_id(episode: str, frame: int) -> str:
    return f"{episode}/{frame:06d}"


# ------------------------------------------------------------------------------------------------ run


@dataclass
class EpisodeSummary:
    """Counts of one episode's labelling (a run record holds the same)."""

    episode: str
    key_frames: int = 0
    labelled: int = 0
    failed: int = 0
    cache_hits: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    skipped: bool = False  # already complete with these settings
    failures: dict[str, int] = field(default_factory=dict)  # reason -> count

    def add(self, result: LabelResult) -> None:
        if result.ok:
            self.labelled += 1
        else:
            self.failed += 1
            reason = (result.failure_reason or "unknown")[:160]
            self.failures[reason] = self.failures.get(reason, 0) + 1
        self.cache_hits += result.cached
        for name in ("prompt_tokens", "completion_tokens"):
            value = getattr(result.usage, name)
            if value is not None:
                setattr(self, name, (getattr(self, name) or 0) + value)


class _Progress:
    """tqdm over the key frames (its total grows as episodes are planned), and the consecutive-failure stop
    rule (raising from the callback stops `label_many`)."""

    def __init__(self, cfg: LabelConfig) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=0, desc="label", unit="frame", disable=not cfg.progress)
        self.limit = cfg.max_consecutive_failures
        self.in_a_row = 0
        self.counts: Counter[str] = Counter()

    def next_episode(self, name: str, key_frames: int) -> None:
        self.bar.total += key_frames
        self.bar.set_description(f"label {name}", refresh=False)

    def __call__(self, done: int, total: int | None, result: LabelResult) -> None:
        self.bar.update(1)
        self.counts["ok" if result.ok else "failed"] += 1
        self.counts["cached"] += result.cached
        self.bar.set_postfix(self.counts, refresh=False)
        self.in_a_row = 0 if result.ok else self.in_a_row + 1
        if self.limit and self.in_a_row >= self.limit:
            raise LabelRunError(
                f"stopped after {self.in_a_row} failed key frames in a row (last: {result.failure_reason}); "
                "answers so far are cached, rerun to continue"
            )


def _record_settings(cfg: LabelConfig, prompt: Prompt, fps: float) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "prompt": prompt.version_id,
        "every_s": _interval_s(cfg.every, fps),
        "context_frames": cfg.context_frames,
        "context_step_s": _interval_s(cfg.context_step, fps),
        "image": {"max_side": cfg.max_image_side, "jpeg_quality": cfg.jpeg_quality},
    }


def _record_path(episode_dir: Path, name: str) -> Path:
    return episode_dir / "labels" / f"{name}.json"


def is_complete(episode_dir: Path, name: str, settings: dict[str, Any]) -> bool:
    """True when the episode's run record has these settings, no failures, and its labels file exists."""
    try:
        record = json.loads(_record_path(episode_dir, name).read_text())
    except (OSError, ValueError):
        return False
    same = all(record.get(k) == settings[k] for k in _SAME_RUN)
    return same and record.get("failed") == 0 and (episode_dir / "labels" / f"{name}.parquet").is_file()


def _done_summary(episode_dir: Path, name: str) -> EpisodeSummary:
    """A skipped episode's counts, from its run record (its labels are there, nothing was asked now)."""
    record = json.loads(_record_path(episode_dir, name).read_text())
    return EpisodeSummary(episode_dir.name, record["key_frames"], record["labelled"], skipped=True)


def label_episode(
    client: VLMClient, inputs: EpisodeInputs, cfg: LabelConfig, progress: _Progress
) -> EpisodeSummary:
    """Label one episode's key frames, then write its labels file and run record (atomically)."""
    summary = EpisodeSummary(inputs.episode.name, key_frames=len(inputs.keys))
    results = client.label_many(requests(inputs), progress=progress)
    frames = {request_id(inputs.episode.name, k.frame): k.frame for k in inputs.keys}
    rows = []
    for result in results:
        summary.add(result)
        if result.ok and result.answer is not None:
            answer = result.answer
            rows.append({"frame": frames[result.request_id], "mode": answer.mode,
                         "target_id": answer.target_id, "confidence": answer.confidence,
                         "rationale": answer.rationale})  # fmt: skip
    write_labels(inputs.episode.dir, cfg.labels_name, rows, target_ids="track")
    _write_record(inputs.episode, cfg, client, summary)
    return summary


def _write_record(episode: Episode, cfg: LabelConfig, client: VLMClient, summary: EpisodeSummary) -> None:
    record = {
        "format": RECORD_FORMAT,
        **_record_settings(cfg, client.prompt, float(episode.meta.fps)),
        **{k: v for k, v in asdict(summary).items() if k not in ("episode", "skipped")},
        "base_url": cfg.base_url,
        "client": client.config.to_dict(),  # the key's variable name only, never the key
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = _record_path(episode.dir, cfg.labels_name)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def run(cfg: LabelConfig) -> list[EpisodeSummary]:
    """Label every episode under `cfg.data`; returns one summary per episode (skipped ones marked)."""
    paths = find_episodes(cfg.data)
    if not paths:
        raise LabelRunError(f"--data {cfg.data}: no episodes found")
    name, version = _parse_prompt(cfg.prompt)
    try:
        client = VLMClient(cfg.client_config(), AnswerCache(cfg.cache_dir), load_prompt(name, version))
    except VLMError as exc:
        raise LabelRunError(str(exc)) from None
    todo, summaries = [], []
    for path in paths:
        fps = float(open_episode(path).meta.fps)
        if not cfg.force and is_complete(path, cfg.labels_name, _record_settings(cfg, client.prompt, fps)):
            summaries.append(_done_summary(path, cfg.labels_name))
        else:
            todo.append(path)
    log.info(
        "labelling %d episode(s) (%d already done) into labels/%s.parquet, answer cache %s",
        len(todo), len(paths) - len(todo), cfg.labels_name, cfg.cache_dir,
    )  # fmt: skip
    progress = _Progress(cfg)
    try:
        for i, path in enumerate(todo):
            # planned one at a time: an episode's tracks are held only while it is labelled
            inputs = plan_episode(path, cfg)
            progress.next_episode(f"{i + 1}/{len(todo)} {path.name}", len(inputs.keys))
            summaries.append(label_episode(client, inputs, cfg, progress))
    except VLMError as exc:  # 401/403/404/405: every further request would fail the same way
        raise LabelRunError(f"{exc} (answers so far are cached)") from None
    finally:
        progress.bar.close()
    return sorted(summaries, key=lambda s: s.episode)


# ------------------------------------------------------------------------------------------------ output


def totals(summaries: list[EpisodeSummary]) -> dict[str, Any]:
    out: dict[str, Any] = {"episodes": len(summaries), "skipped": sum(s.skipped for s in summaries)}
    for name in ("key_frames", "labelled", "failed", "cache_hits"):
        out[name] = sum(getattr(s, name) for s in summaries)
    for name in ("prompt_tokens", "completion_tokens"):
        values = [getattr(s, name) for s in summaries if getattr(s, name) is not None]
        out[name] = sum(values) if values else None
    return out


def format_table(summaries: list[EpisodeSummary]) -> str:
    """Per-episode counts and a total line; tokens as the server reported them ("-" when it did not)."""
    head = ("episode", "keys", "labelled", "failed", "cached", "tokens in", "tokens out")
    rows = [
        (s.episode, "done" if s.skipped else s.key_frames, s.labelled, s.failed, s.cache_hits,
         _dash(s.prompt_tokens), _dash(s.completion_tokens))
        for s in summaries
    ]  # fmt: skip
    t = totals(summaries)
    rows.append(("total", t["key_frames"], t["labelled"], t["failed"], t["cache_hits"],
                 _dash(t["prompt_tokens"]), _dash(t["completion_tokens"])))  # fmt: skip
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
             for r in [head, *rows]]  # fmt: skip
    return "\n".join(lines)


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _log_failures(summaries: list[EpisodeSummary]) -> None:
    reasons: Counter[str] = Counter()
    for s in summaries:
        reasons.update(s.failures)
    for reason, count in reasons.most_common(3):
        log.warning("%d key frame(s) failed: %s", count, reason)


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(LabelConfig, args=argv, prog="pilot label", description=__doc__)
    summaries = run(cfg)
    if cfg.json:
        print(json.dumps({"labels": cfg.labels_name, "total": totals(summaries),
                          "episodes": [asdict(s) for s in summaries]}, indent=2))  # fmt: skip
    else:
        print(format_table(summaries))
    _log_failures(summaries)
    failed = totals(summaries)["failed"]
    if failed:
        log.warning("%d key frame(s) have no label; rerun the same command to retry only those", failed)
    return 1 if failed else 0
