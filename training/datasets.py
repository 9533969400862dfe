"""Training datasets of the three policy models, built from perceived episodes and a label source.

    perception/obs.npz (bot/recordings/perceive.py) ─┐
    steps.parquet (actions, Arena truth) ────────────┼─ load_episode ─▶ EpisodeArrays ─┬─▶ StrategistDataset
    labels/<source>.parquet (training/labels.py) ────┘  (a row per perceived frame)    ├─▶ TacticianDataset
                                                                                       └─▶ ExecutorDataset

Inputs are only what perception stored live, so no label or action leaks into a sample (the rules that make
it so: docs/notes/training.md). Train / validation split by episode, never by window.
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor
from torch.utils.data import Dataset

from bot.perception.state import GLOB, OBJ, OBS_SPEC
from bot.recordings.episode import find_episodes, open_episode, target_id_space
from bot.recordings.perceived import FOLDER, load_perception
from models.strategist import IGNORE_INDEX, MODES
from training.errors import DatasetError
from training.labels import FileLabels, LabelSource, label_source
from validation import ConfigError, check_float, fail

log = logging.getLogger(__name__)

N_MAX = OBS_SPEC.n_max
F_OBJ = len(OBS_SPEC.obj_features)
F_GLOB = len(OBS_SPEC.glob_features)
F_SUM = len(OBS_SPEC.summary_features)


# ------------------------------------------------------------------------------------------------ config


@dataclass
class DataConfig:
    """Where episodes come from, how they are split and which labels they use."""

    data: Path = Path("data/recordings/arena")  # folder searched for perceived episodes
    val_data: Path | None = None  # held-out episodes; None = take val_fraction of `data` by episode
    extra_data: tuple[Path, ...] = ()  # more folders whose episodes only ever train (e.g. `pilot dagger`'s)
    # episodes scored once after training, with the best checkpoint: never trained on, never used to choose it
    test_data: Path | None = None
    val_fraction: float = 0.2  # share of `data` episodes held out when val_data is None
    split_seed: int = 0  # seeds which episodes are held out
    labels: str = "expert"  # label source: expert | heuristic | <name>[:<min_confidence>]
    label_tolerance_s: float = 1.0  # a frame takes the latest label at most this old (sparse labels)

    def __post_init__(self) -> None:
        self.data = Path(self.data)
        self.val_data = None if self.val_data in (None, "") else Path(self.val_data)
        self.test_data = None if self.test_data in (None, "") else Path(self.test_data)
        self.extra_data = tuple(Path(p) for p in self.extra_data)
        try:
            check_float(self, "val_fraction", 0.0, 1.0)
            if self.val_fraction == 1.0:  # nothing left to train on
                raise fail(self, "val_fraction", "a finite number in [0.0, 1.0)", self.val_fraction)
            check_float(self, "label_tolerance_s", 0.0)
        except ConfigError as exc:  # the dataset's own error type, with validation's message
            raise DatasetError(str(exc)) from None
        label_source(self.labels)  # validates the spec


# ------------------------------------------------------------------------------------------------ episodes


@dataclass
class EpisodeArrays:
    """One perceived episode with its labels and actions, one row per perceived frame (R rows, S seconds)."""

    name: str
    fps: float  # perceived rows per second
    frame_size: tuple[int, int]  # (W, H) px
    n_keys: int
    objects: np.ndarray  # (R, N_MAX, F_OBJ) float32
    mask: np.ndarray  # (R, N_MAX) bool
    track_id: np.ndarray  # (R, N_MAX) int64
    glob: np.ndarray  # (R, F_GLOB) float32
    summary: np.ndarray  # (S, F_SUM) float32
    summary_end: np.ndarray  # (S,) int64 last row of each second
    mode: np.ndarray  # (R,) int64 mode index, IGNORE_INDEX where unlabelled
    target_slot: np.ndarray  # (R,) int64 Tactician slot (0 = none, i = object i - 1), IGNORE_INDEX unlabelled
    mouse: np.ndarray  # (R, 2) float32 the action's cursor, 0..1
    click: np.ndarray  # (R,) bool
    key: np.ndarray  # (R,) int64
    held: np.ndarray | None = None  # (R,) int64 Action v2 bitmask of the keys held; None for Action v1
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # upstream context (set_context)
    # the same frames summarised with each second starting k / phases s later, k = 1..phases-1: tuples of
    # (summary, summary_end) like the two fields above (load_episode's `phases`; training episodes only)
    phase_summaries: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    @property
    def summary_mode(self) -> np.ndarray:
        """(S,) the mode label at the last row of each second (what the Strategist predicts at that step)."""
        return self.mode[self.summary_end]

    @property
    def last_summary(self) -> np.ndarray:
        """(R,) index of the latest summary available before row r (its last row < r), -1 if none."""
        return np.searchsorted(self.summary_end, np.arange(len(self.glob)), side="left") - 1

    @property
    def approach(self) -> np.ndarray:
        """(R, 2) where the action points relative to the player (Tactician approach target)."""
        player = self.glob[:, [GLOB["player_x"], GLOB["player_y"]]]
        return (self.mouse - player).astype(np.float32)


def _asof(label_frames: np.ndarray, frames: np.ndarray, tolerance: float) -> np.ndarray:
    """Index of the latest label with frame <= each frame and within `tolerance` frames, -1 if none."""
    idx = np.searchsorted(label_frames, frames, side="right") - 1
    ok = idx >= 0
    ok[ok] &= frames[ok] - label_frames[idx[ok]] <= tolerance
    return np.where(ok, idx, -1)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) x1y1x2y2 box with (K, 4) boxes."""
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area - inter, 1e-9)


def _target_slots(
    target: list, rows: np.ndarray, objects: np.ndarray, mask: np.ndarray, track: np.ndarray, gt: list | None,
    size: tuple[int, int], iou_min: float,
) -> np.ndarray:  # fmt: skip
    """Map each row's target id to its slot: Arena id -> gt box -> best-IoU tracked box; else a track id."""
    w, h = size
    slots = np.zeros(len(rows), np.int64)
    for i, (r, tid) in enumerate(zip(rows, target)):
        if tid is None:
            continue
        valid = np.flatnonzero(mask[r])
        if gt is None:
            hit = valid[track[r, valid] == tid]
            slots[i] = hit[0] + 1 if len(hit) else 0
            continue
        box = next((o for o in gt[i] or [] if o["id"] == tid), None)
        if box is None or not len(valid):
            continue
        gt_box = np.array([box["x1"] / w, box["y1"] / h, box["x2"] / w, box["y2"] / h])
        xywh = objects[r, valid][:, [OBJ["x"], OBJ["y"], OBJ["w"], OBJ["h"]]]
        boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
        iou = _iou(gt_box, boxes)
        best = int(np.argmax(iou))
        slots[i] = valid[best] + 1 if iou[best] >= iou_min else 0
    return slots


def load_episode(
    path: Path, source: LabelSource, tolerance_s: float = 1.0, iou_min: float = 0.3, phases: int = 1
) -> EpisodeArrays:
    """Perception + labels + actions of one episode, aligned on the perceived rows; with `phases` > 1 also
    the summaries of its seconds cut at the other phases (EpisodeArrays.phase_summaries)."""
    episode = open_episode(path)
    p = load_perception(path)
    steps = episode.steps()
    frames = p["frame"].astype(np.int64)
    step_frames = steps.column("frame").to_numpy().astype(np.int64)
    at = np.searchsorted(step_frames, frames)
    if np.any(at >= len(step_frames)) or np.any(step_frames[np.minimum(at, len(step_frames) - 1)] != frames):
        raise DatasetError(f"{path}: perception rows do not match steps.parquet frames; re-run perception")
    every = int(p.meta.get("every", 1))
    fps = float(episode.meta.fps) / every
    table = source.labels(path).sort_by("frame")
    label_frames = table.column("frame").to_numpy().astype(np.int64)
    li = _asof(label_frames, frames, tolerance_s * episode.meta.fps)
    names = table.column("mode").to_pylist()
    index = {m: i for i, m in enumerate(MODES)}
    unknown = sorted({m for m in names if m not in index})
    if unknown:
        raise DatasetError(
            f"{path}: labels {source.name!r} hold modes {unknown}, expected among {list(MODES)}"
        )
    mode = np.array([index[names[j]] if j >= 0 else IGNORE_INDEX for j in li], np.int64)
    labelled = np.flatnonzero(li >= 0)
    ids = table.column("target_id").to_pylist()
    has_gt = "gt_objects" in steps.column_names
    # files without the marker are the Arena expert's (Arena ids); rules on perception give track ids
    space = target_id_space(table, "arena" if isinstance(source, FileLabels) and has_gt else "track")
    use_gt = has_gt and space == "arena"
    gt = steps.column("gt_objects").take(pa.array(at[labelled])).to_pylist() if use_gt else None
    size = (episode.meta.width, episode.meta.height)
    slots = np.full(len(frames), IGNORE_INDEX, np.int64)
    slots[labelled] = _target_slots(
        [ids[li[r]] for r in labelled], labelled, p["objects"], p["mask"], p["track_id"], gt, size, iou_min
    )
    take = pa.array(at)
    return EpisodeArrays(
        name=episode.name,
        fps=fps,
        frame_size=size,
        n_keys=len(episode.meta.keys),
        objects=p["objects"].astype(np.float32),
        mask=p["mask"].astype(bool),
        track_id=p["track_id"],
        glob=p["glob"].astype(np.float32),
        summary=p["summary"].astype(np.float32),
        summary_end=p["summary_end"].astype(np.int64),
        mode=mode,
        target_slot=slots,
        **action_targets(steps, take),
        phase_summaries=tuple(p.summaries(k / phases) for k in range(1, phases)),
    )


def action_targets(steps: pa.Table, take: pa.Array) -> dict[str, np.ndarray]:
    """mouse, click, key (and held, for Action v2 episodes) of the perceived rows: the expert's answer where a
    DAgger episode recorded one (bot/play/dagger.py: the bot played, the expert_* columns say what the expert
    would have done), else the action played."""
    prefix = "expert_" if "expert_mouse_x" in steps.column_names else ""

    def column(name: str) -> np.ndarray:
        return steps.column(prefix + name).take(take).to_numpy(zero_copy_only=False)

    held = None
    if prefix + "held" in steps.column_names:
        held = steps.column(prefix + "held").fill_null(0).take(take).to_numpy(zero_copy_only=False)
    return {
        "mouse": np.stack([column("mouse_x"), column("mouse_y")], axis=1).astype(np.float32),
        "click": column("click").astype(bool),
        "key": column("key").astype(np.int64),
        "held": None if held is None else held.astype(np.int64),
    }


def perceived_episodes(folder: Path) -> list[Path]:
    """Every episode under `folder` that `pilot perceive` (or `pilot dagger`) has perceived."""
    return [p for p in find_episodes(folder) if (p / FOLDER).is_dir()]


def split_data(cfg: DataConfig) -> tuple[list[Path], list[Path]]:
    """(train, validation) episode folders of `data`: val_data if given, else a seeded val_fraction."""
    train = perceived_episodes(cfg.data)
    if not train:
        raise DatasetError(f"DataConfig.data: no perceived episodes under {cfg.data} (run `pilot perceive`)")
    if cfg.val_data is not None:
        val = perceived_episodes(cfg.val_data)
        if not val:
            raise DatasetError(f"DataConfig.val_data: no perceived episodes under {cfg.val_data}")
        held = {p.resolve() for p in val}
        train = [p for p in train if p.resolve() not in held]  # val_data may lie inside data
        if not train:
            raise DatasetError(f"DataConfig.val_data: holds every episode of {cfg.data}, none to train on")
        return train, val
    n_val = math.ceil(len(train) * cfg.val_fraction) if cfg.val_fraction > 0 else 0
    if n_val >= len(train):
        raise DatasetError(
            f"DataConfig.val_fraction: {cfg.val_fraction} of {len(train)} episodes leaves none for training"
        )
    order = sorted(train, key=lambda p: zlib.crc32(f"{cfg.split_seed}/{p.name}".encode()))
    val = sorted(order[:n_val])
    return [p for p in train if p not in val], val


def split_episodes(cfg: DataConfig) -> tuple[list[Path], list[Path]]:
    """(train, validation) episode folders: `data` split as `split_data` says, plus every extra_data episode
    on the training side (never validated on: they are the bot's play, validation is the expert's)."""
    train, val = split_data(cfg)
    seen = {p.resolve() for p in train + val}
    for folder in cfg.extra_data:
        found = perceived_episodes(folder)
        if not found:
            raise DatasetError(f"DataConfig.extra_data: no perceived episodes under {folder}")
        for path in found:
            if path.resolve() not in seen:  # never an episode twice, never a validation one
                seen.add(path.resolve())
                train.append(path)
    return train, val


def final_test_episodes(cfg: DataConfig, used: list[Path]) -> list[Path]:
    """The test_data episode folders ([] without test_data); an error if one of them is in `used` (the
    training and validation episodes), by path or by name (a copy): a test score is only worth something on
    episodes nothing else saw."""
    if cfg.test_data is None:
        return []
    test = perceived_episodes(cfg.test_data)
    if not test:
        raise DatasetError(f"DataConfig.test_data: no perceived episodes under {cfg.test_data}")
    seen = {p.resolve() for p in used} | {p.name for p in used}
    shared = [p.name for p in test if p.resolve() in seen or p.name in seen]
    if shared:
        raise DatasetError(
            f"DataConfig.test_data: {shared[0]} is also a training or validation episode"
            f" ({len(shared)} shared); expected episodes used nowhere else"
        )
    return test


def load_episodes(
    paths: list[Path], cfg: DataConfig, iou_min: float = 0.3, phases: int = 1
) -> list[EpisodeArrays]:
    source = label_source(cfg.labels)
    episodes = [load_episode(p, source, cfg.label_tolerance_s, iou_min, phases) for p in paths]
    log.info(
        "loaded %d episodes (%d rows, %d seconds), labels %r",
        len(episodes),
        sum(len(e.glob) for e in episodes),
        sum(len(e.summary) for e in episodes),
        cfg.labels,
    )
    return episodes


# ------------------------------------------------------------------------------------------------ context


def mode_goals(episode: EpisodeArrays, goal_dim: int) -> np.ndarray:
    """(R, goal_dim) teacher-forced goal: one-hot of the labelled mode of the last completed second."""
    goal = np.zeros((len(episode.glob), goal_dim), np.float32)
    k = episode.last_summary
    modes = np.where(k >= 0, episode.summary_mode[np.maximum(k, 0)], IGNORE_INDEX)
    rows = np.flatnonzero(modes >= 0)
    goal[rows, modes[rows]] = 1.0
    return goal


def target_features(episode: EpisodeArrays, slots: np.ndarray) -> np.ndarray:
    """(R, F_OBJ) features of each row's chosen slot (0 = none -> zeros)."""
    padded = np.concatenate([np.zeros((len(slots), 1, F_OBJ), np.float32), episode.objects], axis=1)
    s = np.clip(slots, 0, N_MAX)
    return padded[np.arange(len(slots)), s]


def click_destinations(
    mouse: np.ndarray, click: np.ndarray, fps: float, horizon_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Executor targets as the live hand uses them: where the next click lands, and whether one is coming.

    mouse (R, 2) cursor per row, click (R,) -> destination (R, 2), intent (R,) bool: for a row whose next
    click (at or after it) comes within `horizon_s`, the destination is that click's point and intent is
    True; otherwise the destination is the cursor `horizon_s` later (where the hand drifts to) and False.
    Why: the next frame's cursor is almost the current one on a person's smooth paths, so predicting it
    teaches "stay where you are"; the live InputDriver (bot/control/driver.py) draws the path itself and
    clicks once
    it has arrived, so the policy only has to say where and whether.
    """
    rows, horizon = len(mouse), max(1, round(horizon_s * fps))
    clicks = np.flatnonzero(click)
    nxt = np.searchsorted(clicks, np.arange(rows), side="left")  # (R,) index of the next click
    if len(clicks):
        at = np.where(nxt < len(clicks), clicks[np.minimum(nxt, len(clicks) - 1)], rows)  # (R,) its row
    else:
        at = np.full(rows, rows)
    intent = (at < rows) & (at - np.arange(rows) <= horizon)
    later = np.minimum(np.arange(rows) + horizon, rows - 1)
    dest = np.where(intent[:, None], mouse[np.minimum(at, rows - 1)], mouse[later])
    return dest.astype(np.float32), intent


def set_teacher_context(episode: EpisodeArrays, goal_dim: int) -> None:
    """Goal, target and approach from the labels (no upstream checkpoints): see the module docstring."""
    slots = np.where(episode.target_slot >= 0, episode.target_slot, 0)
    episode.extra = {
        "goal": mode_goals(episode, goal_dim),
        "target": target_features(episode, slots),
        "approach": np.zeros((len(slots), 2), np.float32),
    }


# ------------------------------------------------------------------------------------------------ datasets


class StrategistDataset(Dataset):
    """Windows of `history` per-second summaries -> the mode at every step (causal model, a loss per step).

    Windows start every `stride` seconds; in a window after an episode's first, the first `history - stride`
    steps are context only (label IGNORE_INDEX), so every second is scored exactly once, with at least
    history - stride seconds of history (or all the episode had). An episode loaded with phases > 1 gives
    the same windows over each of its phase summaries too (the label: the mode at each second's last row).
    """

    def __init__(self, episodes: list[EpisodeArrays], history: int = 60, stride: int = 30) -> None:
        if history < 1 or not 1 <= stride <= history:
            raise DatasetError(f"StrategistDataset: expected 1 <= stride <= history, got {stride}, {history}")
        self.history = history
        # (summary, mode labels) of every phase of every episode
        self.views: list[tuple[np.ndarray, np.ndarray]] = []
        for ep in episodes:
            for summary, ends in ((ep.summary, ep.summary_end), *ep.phase_summaries):
                self.views.append((summary, ep.mode[ends]))
        self.windows: list[tuple[int, int, int]] = []  # (view, start, first scored step)
        for v, (summary, _) in enumerate(self.views):
            n = len(summary)
            start = 0
            while n > 0:
                self.windows.append((v, start, 0 if start == 0 else history - stride))
                if start + history >= n:
                    break
                start += stride

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        v, start, scored = self.windows[i]
        summary, labels = self.views[v]
        end = min(start + self.history, len(summary))
        modes = labels[start:end].copy()
        modes[:scored] = IGNORE_INDEX
        return {"x": torch.from_numpy(summary[start:end]), "modes": torch.from_numpy(modes)}


def collate_strategist(samples: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Right-pad windows: x (B, T, F_SUM), valid (B, T) bool, modes (B, T) with IGNORE_INDEX on padding."""
    length = max(len(s["x"]) for s in samples)
    x = torch.zeros(len(samples), length, samples[0]["x"].shape[-1])
    valid = torch.zeros(len(samples), length, dtype=torch.bool)
    modes = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
    for b, s in enumerate(samples):
        n = len(s["x"])
        x[b, :n], valid[b, :n], modes[b, :n] = s["x"], True, s["modes"]
    return {"x": x, "valid": valid, "modes": modes}


class TacticianDataset(Dataset):
    """Frames at ~`hz` (every labelled row on that grid): object set + goal + context -> target slot."""

    def __init__(self, episodes: list[EpisodeArrays], hz: float = 10.0) -> None:
        if hz <= 0:
            raise DatasetError(f"TacticianDataset: expected hz > 0, got {hz}")
        self.episodes = episodes
        self.rows: list[tuple[int, int]] = []
        for e, ep in enumerate(episodes):
            if "goal" not in ep.extra:
                raise DatasetError(f"TacticianDataset: episode {ep.name} has no goal context (set it first)")
            step = max(1, round(ep.fps / hz))
            self.rows += [(e, int(r)) for r in range(0, len(ep.glob), step) if ep.target_slot[r] >= 0]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        e, r = self.rows[i]
        ep = self.episodes[e]
        return {
            "objects": torch.from_numpy(ep.objects[r]),
            "valid": torch.from_numpy(ep.mask[r]),
            "goal": torch.from_numpy(ep.extra["goal"][r]),
            "context": torch.from_numpy(ep.glob[r]),
            "target": torch.tensor(ep.target_slot[r]),
            "approach": torch.from_numpy(ep.approach[r]),
        }


class ExecutorDataset(Dataset):
    """Chunks of `chunk` consecutive perceived frames: frame state + goal/target/approach -> actions."""

    def __init__(self, episodes: list[EpisodeArrays], chunk: int = 64) -> None:
        if chunk < 1:
            raise DatasetError(f"ExecutorDataset: expected chunk >= 1, got {chunk}")
        self.episodes, self.chunk = episodes, chunk
        self.chunks = [(e, s) for e, ep in enumerate(episodes) for s in range(0, len(ep.glob), chunk)]
        for ep in episodes:
            if not {"goal", "target", "approach"} <= set(ep.extra):
                raise DatasetError(
                    f"ExecutorDataset: episode {ep.name} has no upstream context (set it first)"
                )

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        e, s = self.chunks[i]
        ep = self.episodes[e]
        sl = slice(s, s + self.chunk)
        return {
            "frame": torch.from_numpy(ep.glob[sl]),
            "goal": torch.from_numpy(ep.extra["goal"][sl]),
            "target": torch.from_numpy(ep.extra["target"][sl]),
            "approach": torch.from_numpy(ep.extra["approach"][sl]),
            "mouse": torch.from_numpy(ep.mouse[sl]),
            "click": torch.from_numpy(ep.click[sl]),
            "key": torch.from_numpy(ep.key[sl]),
            "held": torch.from_numpy(_held_of(ep)[sl]),
        }


def _held_of(ep: EpisodeArrays) -> np.ndarray:
    """(R,) int64 held bitmask, zeros for an Action v1 episode (nothing held)."""
    return ep.held if ep.held is not None else np.zeros(len(ep.key), np.int64)


def collate_executor(samples: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Right-pad chunks to (B, T, ...) with valid (B, T) bool."""
    length = max(len(s["frame"]) for s in samples)
    out: dict[str, Tensor] = {}
    for name, value in samples[0].items():
        out[name] = torch.zeros((len(samples), length, *value.shape[1:]), dtype=value.dtype)
    out["valid"] = torch.zeros(len(samples), length, dtype=torch.bool)
    for b, s in enumerate(samples):
        n = len(s["frame"])
        for name, value in s.items():
            out[name][b, :n] = value
        out["valid"][b, :n] = True
    return out
