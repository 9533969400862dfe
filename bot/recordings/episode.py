"""The episode format on disk: the one writer and the one reader that every part of Orbit Pilot uses.

    <episode>/
        meta.json               schema version, game, source (human | expert | bot), fps, size, keys, ...
        video.mp4               H.264 in *fragmented* MP4, a keyframe every second, flushed per packet
        steps.parquet           one row per frame (STEP_FIELDS); written at close from steps.parts/
        labels/<source>.parquet frame, mode, target_id, confidence, rationale (expert, heuristic, vlm-<model>)

A killed writer loses at most the last ~second, and the reader reports such an episode as recovered (how:
docs/notes/recordings.md). Frames are RGB uint8 (H, W, 3); what is wrong on disk raises EpisodeError.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bot.errors import EpisodeError
from bot.recordings.video import VideoWriter

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# The Action contract: 1 = mouse, click and one key tap a frame; 2 adds `held`, the keys held down (games
# flown
# with keys held together, such as Naev). Episodes without the field are version 1 and read as before.
ACTION_VERSION = 2
ACTION_VERSIONS = (1, 2)
SOURCES = ("human", "expert", "bot")
VIDEO_NAME = "video.mp4"
META_NAME = "meta.json"

GT_OBJECT = pa.struct(
    [
        ("id", pa.int32()),
        ("cls", pa.string()),
        ("x1", pa.float32()),
        ("y1", pa.float32()),
        ("x2", pa.float32()),
        ("y2", pa.float32()),
        ("hp", pa.float32()),
        ("hp_max", pa.float32()),
        ("aggro", pa.bool_()),
        ("selected", pa.bool_()),
    ]
)

# Every episode has these columns: the Action contract (mouse in 0..1 of the region, click, key index).
REQUIRED_STEP_FIELDS: tuple[pa.Field, ...] = (
    pa.field("frame", pa.int32(), nullable=False),  # index into the video
    pa.field("t", pa.float64(), nullable=False),  # seconds since the episode started, one clock
    pa.field("mouse_x", pa.float32(), nullable=False),  # cursor x as a fraction of the region width
    pa.field("mouse_y", pa.float32(), nullable=False),  # cursor y as a fraction of the region height
    pa.field("click", pa.bool_(), nullable=False),  # left click this frame
    pa.field("key", pa.int16(), nullable=False),  # index into meta.keys, 0 = none
)
# Columns an episode may carry: human input state, and ground truth when the source is the Arena.
OPTIONAL_STEP_FIELDS: tuple[pa.Field, ...] = (
    pa.field("keys_down", pa.list_(pa.string())),  # keys held (human recordings)
    pa.field("held", pa.int32()),  # Action v2: bit k set = meta.keys[k] is held down during this frame
    pa.field("buttons_down", pa.list_(pa.string())),  # mouse buttons held (human recordings)
    pa.field("gt_objects", pa.list_(GT_OBJECT)),  # on-screen objects with screen-pixel boxes
    pa.field("hp", pa.float32()),  # player hp fraction 0..1
    pa.field("shield", pa.float32()),  # player shield fraction 0..1
    pa.field("credits", pa.int64()),
    pa.field("deaths", pa.int32()),
    pa.field("kills", pa.int32()),  # hostiles the player destroyed so far (games whose score counts kills)
    pa.field("dealt", pa.float32()),  # damage the player dealt so far (game units)
    pa.field("taken", pa.float32()),  # damage the player took so far
    pa.field("player_x", pa.float32()),  # world px
    pa.field("player_y", pa.float32()),  # world px
    pa.field("selected_id", pa.int32()),
    pa.field("attacking", pa.bool_()),
    pa.field("in_safe_zone", pa.bool_()),
    pa.field("reward", pa.float32()),
    pa.field("events", pa.list_(pa.string())),
    # DAgger (bot/play/dagger.py): the action the Arena expert chose on this frame while the bot's action (the
    # required columns) was the one played; datasets take these as the Executor's targets when present
    pa.field("expert_mouse_x", pa.float32()),
    pa.field("expert_mouse_y", pa.float32()),
    pa.field("expert_click", pa.bool_()),
    pa.field("expert_key", pa.int16()),
    pa.field(
        "expert_held", pa.int32()
    ),  # Action v2: the keys the expert would hold (games played with held keys)
)
STEP_FIELDS = {f.name: f for f in REQUIRED_STEP_FIELDS + OPTIONAL_STEP_FIELDS}

LABEL_SCHEMA = pa.schema(
    [
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("mode", pa.string(), nullable=False),
        pa.field("target_id", pa.int32()),  # a track / object id visible in that frame, null = none
        pa.field("confidence", pa.float32()),  # null for sources that are certain (the Arena expert)
        pa.field("rationale", pa.string()),
    ]
)


@dataclass
class EpisodeMeta:
    """Contents of meta.json. `frames` and `complete` are set by the writer's close()."""

    game: str  # game profile name, e.g. "arena"
    source: str  # one of SOURCES
    fps: float  # frames per second of the video and of steps
    width: int  # px of the recorded region
    height: int  # px
    keys: list[str]  # key names; steps.key indexes this list (0 = none)
    modes: list[str] = field(default_factory=lambda: ["FIGHT", "LOOT", "FLEE", "EXPLORE", "CAUTIOUS"])
    classes: list[str] = field(default_factory=list)  # object classes of gt_objects, if any
    region: list[int] = field(default_factory=list)  # screen region x, y, w, h (empty = in-process)
    seed: int | None = None  # Arena seed, when the source is simulated
    created: str = ""  # ISO time, UTC
    frames: int = 0
    complete: bool = False
    schema_version: int = SCHEMA_VERSION
    action_version: int = ACTION_VERSION  # the Action contract of steps (ACTION_VERSIONS)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance (expert config, ...)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"EpisodeMeta.source: expected one of {SOURCES}, got {self.source!r}")
        if not self.fps > 0:
            raise ValueError(f"EpisodeMeta.fps: expected > 0, got {self.fps!r}")
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise ValueError(
                f"EpisodeMeta.width/height: expected positive even sizes, got {self.width}x{self.height}"
            )
        if not self.keys or self.keys[0] != "none":
            raise ValueError(f"EpisodeMeta.keys: expected a list starting with 'none', got {self.keys!r}")
        if self.action_version not in ACTION_VERSIONS:
            raise ValueError(
                f"EpisodeMeta.action_version: expected one of {ACTION_VERSIONS}, got {self.action_version!r}"
            )
        if self.action_version >= 2 and len(self.keys) > 31:
            raise ValueError(
                f"EpisodeMeta.keys: Action v2 holds at most 31 keys in `held`, got {len(self.keys)}"
            )

    @classmethod
    def from_json(cls, path: Path) -> EpisodeMeta:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise EpisodeError(path, "missing (not an episode folder?)") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EpisodeError(path, f"unreadable JSON ({exc})") from None
        if not isinstance(data, dict):
            raise EpisodeError(path, f"expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise EpisodeError(
                path, f"schema_version {version!r} is not supported (this build reads {SCHEMA_VERSION})"
            )
        data.setdefault("action_version", 1)  # written before the Action contract had a version
        if data["action_version"] not in ACTION_VERSIONS:
            raise EpisodeError(
                path,
                f"action_version {data['action_version']!r} is not supported "
                f"(this build reads {ACTION_VERSIONS})",
            )
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise EpisodeError(path, f"invalid meta ({exc})") from None

    def write(self, path: Path) -> None:
        _atomic_write_text(path, json.dumps(asdict(self), indent=2))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------- tables


class _PartedTable:
    """Rows appended in memory, flushed as whole parquet parts; merged into one file at finish()."""

    def __init__(self, base: Path, schema: pa.Schema, flush_every: int) -> None:
        self.base, self.schema, self.flush_every = base, schema, flush_every
        self.parts_dir = base.with_suffix(".parts")
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.num_parts = 0
        self.num_rows = 0

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.num_rows += 1
        if len(self.rows) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        final = self.parts_dir / f"part-{self.num_parts:06d}.parquet"
        tmp = final.with_suffix(".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        self.num_parts += 1
        self.rows = []

    def finish(self) -> None:
        self.flush()
        table = _read_parts(self.parts_dir, self.schema)
        tmp = self.base.with_suffix(".tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, self.base)
        shutil.rmtree(self.parts_dir)


def _read_parts(parts_dir: Path, schema: pa.Schema | None = None) -> pa.Table:
    parts = sorted(parts_dir.glob("part-*.parquet"))
    tables = [_read_parquet(p) for p in parts]
    if not tables:
        if schema is None:
            raise EpisodeError(parts_dir, "no parts written")
        return schema.empty_table()
    return pa.concat_tables(tables)


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise EpisodeError(path, f"unreadable parquet ({exc})") from None


def _read_table(base: Path) -> tuple[pa.Table, bool]:
    """Read `<base>.parquet`, or its parts if the writer never finished; returns (table, recovered)."""
    if base.exists():
        return _read_parquet(base), False
    parts_dir = base.with_suffix(".parts")
    if parts_dir.is_dir():
        return _read_parts(parts_dir), True
    raise EpisodeError(base, "missing")


# ----------------------------------------------------------------------------------------------- writer


class EpisodeWriter:
    """Writes one episode. Use as a context manager; `append(frame, step)` once per frame.

    `step` holds the REQUIRED_STEP_FIELDS except `frame` (assigned here) plus any of `optional_fields`
    declared at construction. Labels go through `add_label(source, ...)` and land in labels/<source>.parquet.
    """

    def __init__(
        self,
        directory: Path | str,
        meta: EpisodeMeta,
        optional_fields: Sequence[str] = (),
        flush_every: int = 30,
        crf: int = 20,
    ) -> None:
        self.dir = Path(directory)
        if (self.dir / META_NAME).exists():
            raise EpisodeError(self.dir, "already holds an episode; choose a new folder or delete it first")
        unknown = [name for name in optional_fields if name not in STEP_FIELDS]
        if unknown:
            raise ValueError(f"optional_fields: unknown step columns {unknown}; known: {sorted(STEP_FIELDS)}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        self.meta.created = self.meta.created or datetime.now(UTC).isoformat(timespec="seconds")
        self.meta.frames, self.meta.complete = 0, False
        self.meta.write(self.dir / META_NAME)
        fields = list(REQUIRED_STEP_FIELDS) + [STEP_FIELDS[n] for n in optional_fields]
        self.step_schema = pa.schema(fields)
        self.steps = _PartedTable(self.dir / "steps.parquet", self.step_schema, flush_every)
        self.labels: dict[str, _PartedTable] = {}
        self.flush_every = flush_every
        self.video = VideoWriter(self.dir / VIDEO_NAME, meta.width, meta.height, meta.fps, crf)
        self.closed = False

    @property
    def num_frames(self) -> int:
        return self.steps.num_rows

    def append(self, frame: np.ndarray, step: dict[str, Any]) -> int:
        """Add one frame (RGB uint8 (H, W, 3)) and its step row; returns the frame index."""
        expected = (self.meta.height, self.meta.width, 3)
        if frame.shape != expected or frame.dtype != np.uint8:
            raise ValueError(f"frame: expected uint8 {expected}, got {frame.dtype} {frame.shape}")
        index = self.steps.num_rows
        row = {"frame": index, **step}
        missing = [f.name for f in REQUIRED_STEP_FIELDS if f.name not in row]
        extra = [name for name in row if name not in self.step_schema.names]
        if missing or extra:
            raise ValueError(f"step row: missing columns {missing}, undeclared columns {extra}")
        self.video.put(np.ascontiguousarray(frame))
        self.steps.append(row)
        return index

    def add_label(
        self,
        source: str,
        frame: int,
        mode: str,
        target_id: int | None = None,
        confidence: float | None = None,
        rationale: str | None = None,
    ) -> None:
        if mode not in self.meta.modes:
            raise ValueError(f"label mode: expected one of {self.meta.modes}, got {mode!r}")
        table = self.labels.get(source)
        if table is None:
            table = _PartedTable(self.dir / "labels" / f"{source}.parquet", LABEL_SCHEMA, self.flush_every)
            self.labels[source] = table
        table.append(
            {
                "frame": frame,
                "mode": mode,
                "target_id": target_id,
                "confidence": confidence,
                "rationale": rationale,
            }
        )

    def close(self) -> EpisodeMeta:
        """Finish the video and the tables and mark the episode complete. Safe to call twice."""
        if self.closed:
            return self.meta
        self.closed = True
        self.video.close()
        self.steps.finish()
        for table in self.labels.values():
            table.finish()
        self.meta.frames, self.meta.complete = self.steps.num_rows, True
        self.meta.write(self.dir / META_NAME)
        return self.meta

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # Also on Ctrl+C or an error: what was recorded so far is finalised, not thrown away.
        self.close()


TARGET_IDS = (
    "arena",
    "track",
)  # what a label file's target_id means: Arena object ids or perception track ids


BOXES_PREFIX = "boxes-"  # labels/boxes-*.parquet: detector boxes (vlm_labeling/autolabel), not labels


def target_id_space(table: pa.Table, default: str) -> str:
    """The id space a labels table declares (schema metadata "target_ids"), else `default` (older files)."""
    space = (table.schema.metadata or {}).get(b"target_ids", default.encode()).decode()
    if space not in TARGET_IDS:
        raise EpisodeError("labels", f"target_ids {space!r}, expected one of {list(TARGET_IDS)}")
    return space


def write_labels(
    episode_dir: Path | str, source: str, rows: Sequence[dict[str, Any]], target_ids: str = "track"
) -> Path:
    """Write (replace) labels/<source>.parquet of an existing episode, atomically.

    `target_ids` says what the target ids are ("track": perception track ids, e.g. a VLM choosing among the
    tracks of its prompt; "arena": the Arena's object ids, from ground truth), so a dataset maps them right.
    """
    if target_ids not in TARGET_IDS:
        raise ValueError(f"target_ids: expected one of {list(TARGET_IDS)}, got {target_ids!r}")
    path = Path(episode_dir) / "labels" / f"{source}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(list(rows), schema=LABEL_SCHEMA)
    table = table.replace_schema_metadata({"target_ids": target_ids})
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------- reader


class Episode:
    """A recorded episode, read lazily. `recovered` is True when its writer never finished."""

    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise EpisodeError(self.dir, "not a directory")
        self.meta = EpisodeMeta.from_json(self.dir / META_NAME)
        self.video_path = self.dir / VIDEO_NAME
        if not self.video_path.exists():
            raise EpisodeError(self.video_path, "missing")
        self._steps: pa.Table | None = None
        self.recovered = not self.meta.complete

    @property
    def name(self) -> str:
        return self.dir.name

    def steps(self) -> pa.Table:
        """All step rows (cut to the frames the video holds when the episode was recovered)."""
        if self._steps is None:
            table, from_parts = _read_table(self.dir / "steps.parquet")
            self._check_step_columns(table)
            if from_parts or not self.meta.complete:
                table = table.slice(0, min(table.num_rows, self._count_video_frames()))
            elif table.num_rows != self.meta.frames:
                raise EpisodeError(
                    self.dir / "steps.parquet",
                    f"has {table.num_rows} rows, meta.json says {self.meta.frames} frames",
                )
            self._steps = table
        return self._steps

    def held(self) -> np.ndarray:
        """(frames,) int32 bitmask of the keys held down per frame (bit k = meta.keys[k]); zeros before
        Action v2."""
        steps = self.steps()
        if "held" not in steps.schema.names:
            return np.zeros(steps.num_rows, np.int32)
        return steps.column("held").fill_null(0).to_numpy().astype(np.int32)

    def _check_step_columns(self, table: pa.Table) -> None:
        for f in REQUIRED_STEP_FIELDS:
            if f.name not in table.schema.names:
                raise EpisodeError(self.dir / "steps.parquet", f"missing column {f.name!r}")
            if not table.schema.field(f.name).type.equals(f.type):
                got = table.schema.field(f.name).type
                raise EpisodeError(
                    self.dir / "steps.parquet", f"column {f.name!r}: expected {f.type}, got {got}"
                )

    @property
    def num_frames(self) -> int:
        return self.steps().num_rows

    def label_sources(self) -> list[str]:
        folder = self.dir / "labels"
        if not folder.is_dir():
            return []
        names = {p.stem for p in folder.glob("*.parquet")} | {p.stem for p in folder.glob("*.parts")}
        # labels/boxes-<source>.parquet are detector boxes (`pilot autolabel`), not mode / target labels
        return sorted(n for n in names if not n.startswith(BOXES_PREFIX))

    def labels(self, source: str) -> pa.Table:
        table, _ = _read_table(self.dir / "labels" / f"{source}.parquet")
        for f in LABEL_SCHEMA:
            if f.name not in table.schema.names:
                raise EpisodeError(self.dir / "labels" / f"{source}.parquet", f"missing column {f.name!r}")
        return table.filter(pc.less(table["frame"], self.num_frames))

    def frames(
        self, start: int = 0, stop: int | None = None, every: int = 1
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, RGB frame) for index in range(start, stop, every), decoding sequentially."""
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        for index, frame in self._decode(start):
            if index >= stop:
                return
            if (index - start) % every == 0:
                yield index, frame

    def frame(self, index: int) -> np.ndarray:
        for _, frame in self.frames(index, index + 1):
            return frame
        raise EpisodeError(self.video_path, f"frame {index} is out of range (0..{self.num_frames - 1})")

    def _decode(self, start: int) -> Iterator[tuple[int, np.ndarray]]:
        import av

        try:
            with av.open(str(self.video_path)) as container:
                if not container.streams.video:  # garbage can parse as a container of other streams
                    raise EpisodeError(self.video_path, "undecodable video (no video stream)")
                stream = container.streams.video[0]
                if start > 0:
                    container.seek(
                        int(start / self.meta.fps / stream.time_base), stream=stream, backward=True
                    )
                for vframe in container.decode(stream):
                    index = round(float(vframe.pts * stream.time_base) * self.meta.fps)
                    if index >= start:
                        yield index, vframe.to_ndarray(format="rgb24")
        except (av.error.FFmpegError, UnicodeDecodeError) as exc:  # garbage metadata fails to decode as text
            raise EpisodeError(self.video_path, f"undecodable video ({exc})") from None

    def _count_video_frames(self) -> int:
        import av

        count = 0
        try:
            with av.open(str(self.video_path)) as container:
                for stream in container.streams.video[:1]:  # none in garbage parsed as another container
                    for packet in container.demux(stream):
                        count += packet.size > 0
        except (av.error.FFmpegError, UnicodeDecodeError):
            pass  # a cut-off last fragment: keep the frames counted so far
        return count


def open_episode(path: Path | str) -> Episode:
    return Episode(path)


def find_episodes(root: Path | str) -> list[Path]:
    """Every episode folder (one holding meta.json) under `root`, sorted; `root` itself may be one."""
    root = Path(root)
    if not root.exists():
        raise EpisodeError(root, "does not exist")
    return sorted(p.parent for p in root.rglob(META_NAME))
