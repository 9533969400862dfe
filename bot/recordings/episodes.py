"""`pilot episodes`: list, show, check and label recorded episodes (any source: human, expert, bot).

    pilot episodes ls data/recordings                 one line per episode: frames, duration, labels, ...
    pilot episodes show data/recordings/arena/human-20261122-210000-00 [--sheet sheet.png] [--count 12]
    pilot episodes check data/recordings [--quick]    every file readable and consistent; exit 1 if not
    pilot episodes label data/recordings [--against expert]   labels/heuristic.parquet (labels.py)

An episode whose writer never finished (crash, kill -9) is reported RECOVERED; with --strict that fails too.
What `check` reads: docs/notes/recordings.md, section bot/recordings/episodes.py.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tyro

from bot.errors import EpisodeError, PilotError
from bot.recordings.episode import Episode, find_episodes, open_episode

log = logging.getLogger(__name__)

USAGE = "usage: pilot episodes {ls,show,check,label} DIR [options]   (pilot episodes <verb> --help)"


# ------------------------------------------------------------------------------------------------ ls


@dataclass
class LsConfig:
    """List the episodes under a folder."""

    path: tyro.conf.Positional[Path]  # an episode folder or a folder searched for episodes
    json: bool = False  # one JSON object per line instead of a table


def episode_row(path: Path) -> dict[str, Any]:
    """The ls line of one episode; an unreadable one gets an `error`."""
    try:
        episode = open_episode(path)
        frames = episode.num_frames
    except EpisodeError as exc:
        return {"episode": path.name, "error": exc.problem}
    meta = episode.meta
    return {
        "episode": path.name,
        "source": meta.source,
        "game": meta.game,
        "frames": frames,
        "seconds": round(frames / meta.fps, 1),
        "size": f"{meta.width}x{meta.height}",
        "state": "recovered" if episode.recovered else "complete",
        "labels": ",".join(episode.label_sources()) or "-",
        "perceived": (path / "perception" / "perception.json").exists(),
        "dropped": meta.extra.get("dropped_frames", ""),
    }


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


def run_ls(cfg: LsConfig) -> int:
    paths = find_episodes(cfg.path)
    if not paths:
        raise PilotError(f"{cfg.path}: no episodes (folders holding meta.json)")
    rows = [episode_row(p) for p in paths]
    if cfg.json:
        for row in rows:
            print(json.dumps(row))
    else:
        columns = ["episode", "source", "game", "frames", "seconds", "size", "state", "labels", "perceived"]
        print_table(
            [r if "error" not in r else {**r, "state": "ERROR: " + r["error"]} for r in rows], columns
        )
    return 0


# ------------------------------------------------------------------------------------------------ show


@dataclass
class ShowConfig:
    """Statistics of one episode, and a contact sheet of its frames (PNG)."""

    path: tyro.conf.Positional[Path]  # the episode folder
    sheet: Path | None = None  # PNG to write (default: <episode>/contact-sheet.png)
    count: int = 12  # frames on the sheet, evenly spaced
    columns: int = 4  # thumbnails per sheet row
    thumb_width: int = 320  # px of each thumbnail

    def __post_init__(self) -> None:
        for name in ("count", "columns", "thumb_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected >= 1, got {getattr(self, name)}")


def episode_stats(episode: Episode) -> dict[str, Any]:
    """Counts that tell what an episode holds: duration, input, labels, perception."""
    steps, meta = episode.steps(), episode.meta
    t = steps.column("t").to_numpy()
    keys = Counter(meta.keys[k] for k in steps.column("key").to_numpy() if 0 < k < len(meta.keys))
    stats: dict[str, Any] = {
        "episode": str(episode.dir),
        "game": meta.game,
        "source": meta.source,
        "state": "recovered" if episode.recovered else "complete",
        "size": [meta.width, meta.height],
        "region": meta.region,
        "fps": meta.fps,
        "frames": len(t),
        "seconds": round(float(t[-1] - t[0]), 2) if len(t) else 0.0,
        "achieved_fps": round((len(t) - 1) / float(t[-1] - t[0]), 2) if len(t) > 1 and t[-1] > t[0] else None,
        "dropped_frames": meta.extra.get("dropped_frames"),
        "clicks": int(np.sum(steps.column("click").to_numpy(zero_copy_only=False))),
        "key_taps": dict(keys),
        "created": meta.created,
    }
    if meta.source == "human" and "events" in steps.column_names:
        stats["input_events"] = int(sum(len(e or []) for e in steps.column("events").to_pylist()))
    stats["labels"] = {
        source: dict(Counter(episode.labels(source).column("mode").to_pylist()))
        for source in episode.label_sources()
    }
    perception = episode.dir / "perception" / "perception.json"
    if perception.exists():
        info = json.loads(perception.read_text())
        stats["perception"] = {"frames": info.get("frames"), "every": info.get("every"),
                               "detector": info.get("detector", {}).get("id")}  # fmt: skip
    return stats


def contact_sheet(episode: Episode, count: int, columns: int, thumb_width: int) -> np.ndarray:
    """RGB image: `count` evenly spaced frames with their index, time and the row's cursor (+ click)."""
    import cv2

    n = episode.num_frames
    wanted = sorted(set(np.linspace(0, n - 1, min(count, n)).round().astype(int).tolist()))
    steps = episode.steps()
    mx, my = steps.column("mouse_x").to_numpy(), steps.column("mouse_y").to_numpy()
    click, t = steps.column("click").to_numpy(zero_copy_only=False), steps.column("t").to_numpy()
    scale = thumb_width / episode.meta.width
    th = round(episode.meta.height * scale)
    thumbs = []
    for index, frame in episode.frames():
        if index not in wanted:
            continue
        thumb = cv2.resize(frame, (thumb_width, th), interpolation=cv2.INTER_AREA)
        cursor = (round(mx[index] * thumb_width), round(my[index] * th))
        cv2.circle(thumb, cursor, 6, (255, 60, 60) if click[index] else (255, 255, 0), 2)
        cv2.putText(
            thumb, f"#{index} {t[index]:.2f}s", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255)
        )
        thumbs.append(thumb)
        if len(thumbs) == len(wanted):
            break
    while len(thumbs) % columns:
        thumbs.append(np.zeros_like(thumbs[0]))
    rows = [np.hstack(thumbs[i : i + columns]) for i in range(0, len(thumbs), columns)]
    return np.vstack(rows)


def run_show(cfg: ShowConfig) -> int:
    import cv2

    episode = open_episode(cfg.path)
    stats = episode_stats(episode)
    if not stats["frames"]:
        raise EpisodeError(cfg.path, "holds no frames")
    sheet = cfg.sheet or episode.dir / "contact-sheet.png"
    image = contact_sheet(episode, cfg.count, cfg.columns, cfg.thumb_width)
    sheet.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(sheet), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise PilotError(f"{sheet}: could not write the contact sheet")
    stats["contact_sheet"] = str(sheet)
    print(json.dumps(stats, indent=2))
    return 0


# ------------------------------------------------------------------------------------------------ check


@dataclass
class CheckConfig:
    """Check that every episode under a folder is readable and consistent; exit 1 if any is not."""

    path: tyro.conf.Positional[Path]  # an episode folder or a folder searched for episodes
    quick: bool = False  # count the video's packets instead of decoding every frame
    strict: bool = False  # count recovered (never finished) episodes as failures too


@dataclass
class CheckResult:
    episode: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "ERROR" if self.errors else ("WARN" if self.warnings else "OK")


def count_video_frames(path: Path, decode: bool) -> tuple[int, str | None]:
    """(frames, error): frames decoded (or packets demuxed) before the end or the first error."""
    import av

    count = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if decode:
                for _ in container.decode(stream):
                    count += 1
            else:
                count = sum(p.size > 0 for p in container.demux(stream))
    except (av.error.FFmpegError, IndexError, UnicodeDecodeError) as exc:  # no video stream, garbage metadata
        return count, str(exc) or type(exc).__name__
    return count, None


def _check_video(episode: Episode, rows: int, quick: bool, result: CheckResult) -> None:
    name = episode.video_path.name
    frames, error = count_video_frames(episode.video_path, decode=not quick)
    if error and not episode.recovered:  # a recovered episode's last fragment may be cut off
        result.errors.append(f"{name}: unreadable video after {frames} frames ({error})")
    if frames < rows:
        result.errors.append(f"{name}: {frames} readable frames, steps.parquet has {rows} rows")
    elif frames > rows and not episode.recovered:
        result.errors.append(f"{name}: {frames} frames, steps.parquet has only {rows} rows")


def _check_labels(episode: Episode, rows: int, result: CheckResult) -> None:
    for source in episode.label_sources():
        try:
            table = episode.labels(source)
        except EpisodeError as exc:
            result.errors.append(f"labels/{source}: {exc.problem}")
            continue
        unknown = sorted(set(table.column("mode").to_pylist()) - set(episode.meta.modes))
        if unknown:
            result.errors.append(f"labels/{source}: modes {unknown} not in meta.modes")
        if table.num_rows == 0 and rows:
            result.warnings.append(f"labels/{source}: no rows")


def _check_perception(episode: Episode, rows: int, result: CheckResult) -> None:
    folder = episode.dir / "perception"
    if not folder.is_dir():
        return
    from bot.errors import PerceptionError
    from bot.perception.state import OBS_SPEC
    from bot.recordings.perceived import META_NAME, load_perception

    try:
        spec = json.loads((folder / META_NAME).read_text()).get("obs_spec")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        result.errors.append(f"perception/{META_NAME}: unreadable ({exc})")
        return
    if spec != OBS_SPEC.to_dict():
        result.warnings.append(f"perception is stale (not {OBS_SPEC.id}): re-run `pilot perceive`")
        return
    try:
        frames = load_perception(episode.dir)["frame"]
    except PerceptionError as exc:
        result.errors.append(f"perception: {exc}")
        return
    if len(frames) and int(frames.max()) >= rows:
        result.errors.append(f"perception: frame {int(frames.max())} beyond the episode's {rows} frames")


def check_episode(path: Path, quick: bool = False) -> CheckResult:
    """Every problem of one episode, as one-line errors (unusable) and warnings (usable, look at it)."""
    result = CheckResult(path.name)
    try:
        episode = open_episode(path)
        rows = episode.steps().num_rows
    except EpisodeError as exc:
        result.errors.append(f"{exc.path.name}: {exc.problem}")
        return result
    if episode.recovered:
        result.warnings.append(f"RECOVERED: the writer never finished; {rows} frames readable")
    elif any(path.glob("*.parts")) or any(path.rglob("*.tmp")):
        result.warnings.append("left-over .parts / .tmp files in a complete episode")
    if rows == 0:
        result.errors.append("steps.parquet: no rows")
    _check_video(episode, rows, quick, result)
    _check_labels(episode, rows, result)
    _check_perception(episode, rows, result)
    return result


def run_check(cfg: CheckConfig) -> int:
    paths = find_episodes(cfg.path)
    if not paths:
        raise PilotError(f"{cfg.path}: no episodes (folders holding meta.json)")
    results = [check_episode(p, cfg.quick) for p in paths]
    for r in results:
        notes = "; ".join(r.errors + r.warnings)
        print(f"{r.status:5}  {r.episode}" + (f"  {notes}" if notes else ""))
    bad = [r for r in results if r.errors or (cfg.strict and r.warnings)]
    print(f"{len(results)} episode(s): {len(results) - len(bad)} ok, {len(bad)} with problems")
    return 1 if bad else 0


# ------------------------------------------------------------------------------------------------ label


@dataclass
class LabelConfig:
    """Write labels/heuristic.parquet (labels from the player's actions, bot/recordings/labels.py) for each
    episode."""

    path: tyro.conf.Positional[Path]  # an episode folder or a folder searched for episodes
    against: str | None = None  # also report agreement with labels/<against> (e.g. expert)
    write: bool = True  # --no-write: only measure (with --against)


def run_label(cfg: LabelConfig) -> int:
    from bot.recordings.labels import evaluate, label_episode

    paths = find_episodes(cfg.path)
    if not paths:
        raise PilotError(f"{cfg.path}: no episodes (folders holding meta.json)")
    failed = 0
    if cfg.write:
        for path in paths:
            try:
                print(f"{path.name}: {label_episode(path)}")
            except EpisodeError as exc:  # e.g. a human episode not perceived yet: say so, label the others
                print(f"{path.name}: not labelled: {exc}")
                failed += 1
    if cfg.against:
        usable = [p for p in paths if cfg.against in open_episode(p).label_sources()]
        if not usable:
            raise PilotError(f"{cfg.path}: no episode has labels/{cfg.against}.parquet")
        print(json.dumps(evaluate(usable, cfg.against)))
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------ main

VERBS: dict[str, tuple[type, Any]] = {
    "ls": (LsConfig, run_ls),
    "show": (ShowConfig, run_show),
    "check": (CheckConfig, run_check),
    "label": (LabelConfig, run_label),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"{USAGE}\n\n{__doc__}")
        return 0 if argv else 2
    if argv[0] not in VERBS:
        print(f"pilot episodes: unknown verb {argv[0]!r}; {USAGE}", file=sys.stderr)
        return 2
    cls, run = VERBS[argv[0]]
    cfg = tyro.cli(cls, args=argv[1:], prog=f"pilot episodes {argv[0]}", description=cls.__doc__)
    return run(cfg)
