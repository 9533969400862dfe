"""The stages of `pilot autolabel`, each skipped when its output in the work folder is fresh (same settings):

    episodes ──tracks (proposals + ByteTrack, per episode)──▶ crops (per episode)──▶ clusters + montages
        ──names (names file, VLM)──▶ labels: named tracks + template matches ──▶ boxes-auto.parquet, dataset/

Ground truth is never read. Layout of the work folder: store.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa

from bot.profile import GameProfile
from bot.recordings.episode import Episode, find_episodes, open_episode
from vlm_labeling.autolabel import clusters as C
from vlm_labeling.autolabel import labels as L
from vlm_labeling.autolabel import naming as N
from vlm_labeling.autolabel import review, store
from vlm_labeling.autolabel.config import AutolabelConfig
from vlm_labeling.autolabel.errors import AutolabelError
from vlm_labeling.autolabel.features import crop
from vlm_labeling.autolabel.proposals import valid_mask
from vlm_labeling.autolabel.templates import Sprite, farthest_points, inside, match_frame
from vlm_labeling.autolabel.tracks import episode_dir, settings, track_episode

log = logging.getLogger(__name__)

CLUSTERS = store.CLUSTERS
CLUSTERS_META = store.CLUSTERS_META
SAMPLES = "samples.npz"


def discover(cfg: AutolabelConfig, profile: GameProfile) -> dict[str, Episode]:
    """episode id (its path under --data) -> Episode, for the episodes of this profile's game."""
    found = {}
    for path in find_episodes(cfg.data):
        episode = open_episode(path)
        if episode.meta.game != profile.name:
            log.warning("skipping %s: game %r, not %r", path, episode.meta.game, profile.name)
            continue
        found[path.relative_to(cfg.data).as_posix() if path != cfg.data else path.name] = episode
    if not found:
        raise AutolabelError(f"{cfg.data}: no episodes of game {profile.name!r} (meta.json `game`)")
    return found


def panels(profile: GameProfile) -> list[list[float]]:
    return [list(p) for p in profile.hud.panels.values()]


# ------------------------------------------------------------------------------------------------ tracks


def stage_tracks(
    cfg: AutolabelConfig, profile: GameProfile, episodes: dict[str, Episode]
) -> dict[str, pa.Table]:
    """Tracks of every episode with motion; episodes without any are skipped with a one-line warning."""
    key = store.settings_hash(settings(cfg.proposals, cfg.tracks, panels(profile)))
    out = {}
    for name, episode in episodes.items():
        path = episode_dir(cfg.out, episode) / "tracks.parquet"
        table = None if cfg.force else store.fresh_table(path, key)
        if table is None:
            table, stats = track_episode(episode, cfg.proposals, cfg.tracks, panels(profile))
            table = table.replace_schema_metadata({"stats": json.dumps(stats)})
            table = store.write_table(path, table, key)
            log.info("%s: %s", name, stats)
        stats = json.loads(table.schema.metadata[b"stats"])
        if stats["changed_frames"] == 0:
            log.warning(
                "%s: no motion in %d frames (a frozen or paused recording?); skipped",
                episode.video_path,
                stats["frames"],
            )
            continue
        out[name] = table
    if not out:
        raise AutolabelError(
            f"{cfg.data}: no episode has motion (every video is a still image); nothing to label"
        )
    return out


# ------------------------------------------------------------------------------------------------ crops


def stage_crops(
    cfg: AutolabelConfig, episodes: dict[str, Episode], tracks: dict[str, pa.Table]
) -> dict[str, dict]:
    out = {}
    for name, table in tracks.items():
        key = store.settings_hash(
            table.schema.metadata[b"settings"].decode(), asdict(cfg.clusters), asdict(cfg.features)
        )
        path = episode_dir(cfg.out, episodes[name]) / "crops.npz"
        arrays = None if cfg.force else store.fresh_arrays(path, key)
        if arrays is None:
            arrays = C.episode_crops(episodes[name], table, cfg.clusters, cfg.features)
            store.write_arrays(path, key, **arrays)
        out[name] = arrays
    return out


# ------------------------------------------------------------------------------------------------ clusters


def stage_clusters(cfg: AutolabelConfig, tracks: dict[str, pa.Table], crops: dict[str, dict]) -> list[dict]:
    """clusters.json (+ montages, + the samples' clusters for the sprite bank), or the fresh one on disk."""
    names = sorted(crops)
    key = store.settings_hash(
        [(n, crops[n]["features"].shape, float(crops[n]["features"].sum())) for n in names],
        asdict(cfg.clusters),
    )
    meta_path, path = cfg.out / CLUSTERS_META, cfg.out / CLUSTERS
    if (
        not cfg.force
        and meta_path.exists()
        and path.exists()
        and store.read_json(meta_path).get("settings") == key
    ):
        return store.read_json(path)
    episode_of = np.concatenate([np.full(len(crops[n]["frame"]), i) for i, n in enumerate(names)]).astype(
        np.int32
    )
    track = np.concatenate([crops[n]["track"] for n in names]).astype(np.int64)
    features = np.concatenate([crops[n]["features"] for n in names])
    tiles = np.concatenate([crops[n]["tiles"] for n in names])
    if not len(features):
        raise AutolabelError(
            f"{cfg.data}: no proposal persisted long enough to be tracked; nothing to cluster"
        )
    keys = episode_of.astype(np.int64) * (1 << 32) + track
    labels = C.cluster_crops(features, cfg.clusters)
    vote = C.vote_tracks(keys, labels, C.reduce(features, cfg.clusters.dims))
    clusters, order, moving = _cluster_list(cfg, names, tracks, vote)
    for cluster, old in zip(clusters, order):
        mine = np.flatnonzero(np.array([vote.get(k, -1) == old for k in keys]))
        C.write_montage(
            cfg.out / cluster["montage"], C.montage(tiles[mine], keys[mine], cfg.clusters.montage_tiles)
        )
    renumber = {old: new for new, old in enumerate(order)}
    sample_cluster = np.array([renumber.get(vote.get(k, -1), -1) for k in keys], np.int32)
    store.write_arrays(
        cfg.out / SAMPLES,
        key,
        episode=episode_of,
        frame=np.concatenate([crops[n]["frame"] for n in names]),
        box=np.concatenate([crops[n]["box"] for n in names]),
        cluster=sample_cluster,
        features=features,
    )
    store.write_json(path, clusters)
    fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    store.write_json(
        meta_path,
        {
            "settings": key,
            "fingerprint": fingerprint,
            "episodes": names,
            "moving": {str(c["id"]): m for c, m in zip(clusters, moving)},
        },
    )
    log.info("%d clusters of %d tracks written to %s", len(clusters), len(vote), path)
    return clusters


def _cluster_list(cfg: AutolabelConfig, names: list[str], tracks: dict[str, pa.Table], vote: dict) -> tuple:
    """(clusters as clusters.json lists them, largest first; their HDBSCAN labels; moving share of each)."""
    members: dict[int, list[dict[str, Any]]] = {}
    moving: dict[int, list[bool]] = {}
    for i, name in enumerate(names):
        for row in tracks[name].to_pylist():
            label = vote.get(i * (1 << 32) + row["track"])
            if label is None:
                continue
            box = {k: round(float(row[k]), 2) for k in ("x1", "y1", "x2", "y2")}
            members.setdefault(label, []).append({"episode": name, "frame": int(row["frame"]), **box})
            moving.setdefault(label, []).append(bool(row["moving"]))
    order = sorted(members, key=lambda label: (-len(members[label]), label))
    if len(order) > cfg.clusters.max_clusters:
        dropped = sum(len(members[label]) for label in order[cfg.clusters.max_clusters :])
        log.warning(
            "%d clusters; the %d smallest (%d boxes) are left unlabelled (--clusters.max-clusters)",
            len(order),
            len(order) - cfg.clusters.max_clusters,
            dropped,
        )
        order = order[: cfg.clusters.max_clusters]
    clusters = [
        {
            "id": new,
            "size": len(members[old]),
            "montage": f"montages/cluster_{new:03d}.png",
            "members": members[old],
        }
        for new, old in enumerate(order)
    ]
    return clusters, order, [round(float(np.mean(moving[old])), 3) for old in order]


def clusters_meta(cfg: AutolabelConfig) -> dict[str, Any]:
    return store.read_json(cfg.out / CLUSTERS_META)


# ------------------------------------------------------------------------------------------------ names


def stage_names(
    cfg: AutolabelConfig,
    profile: GameProfile,
    clusters: list[dict],
    announce: Callable[[str], None] | None = None,
) -> dict[int, str]:
    """cluster id -> class or "ignore", from the names file, the VLM, then a person on the review page
    (its URL goes to `announce`; the run waits); unnamed clusters stop the run (or are ignored with
    --unnamed ignore)."""
    meta = clusters_meta(cfg)
    names = N.load_names(cfg.out, meta["fingerprint"])
    if cfg.names is not None:
        given = N.load_names_file(cfg.names, {c["id"] for c in clusters}, profile)
        N.apply_file(cfg.out, names, given, cfg.names)
    todo = N.unnamed(clusters, names)
    if todo and cfg.vlm_url:
        client = N.make_client(cfg.out, profile, cfg.client_config())
        moving = {int(k): v for k, v in meta["moving"].items()}
        names.update(N.vlm_names(cfg.out, clusters, todo, profile, client, cfg.vlm_min_confidence, moving))
    N.save_names(cfg.out, meta["fingerprint"], names)
    todo = N.unnamed(clusters, names)
    if todo and cfg.review:
        state = review.ReviewState(cfg.out, profile.class_names, audit=False)
        review.serve(state, cfg.review_port, lambda left: left["clusters"] == 0, announce)
        names = N.load_names(cfg.out, meta["fingerprint"])
        todo = N.unnamed(clusters, names)
    if todo and cfg.unnamed == "error":
        how = "a --names file, the review page (without --no-review) or --vlm-url"
        example = f'{{"{todo[0]}": "<class or ignore>"}}'
        raise AutolabelError(
            f"{cfg.out / CLUSTERS}: clusters {todo} have no name; name them ({example}) "
            f"with {how} and rerun (finished stages are kept)"
        )
    return {cid: v["name"] for cid, v in names.items()} | {cid: N.IGNORE for cid in todo}


# ------------------------------------------------------------------------------------------------ labels


def stage_labels(
    cfg: AutolabelConfig,
    profile: GameProfile,
    episodes: dict[str, Episode],
    clusters: list[dict],
    names: dict[int, str],
) -> dict[str, Any]:
    """boxes-auto.parquet in each episode and WORK/dataset/; returns label counts."""
    meta = clusters_meta(cfg)
    key = store.settings_hash(
        meta["fingerprint"],
        sorted(names.items()),
        asdict(cfg.templates),
        cfg.every,
        cfg.imgsz or profile.detector.imgsz,
        cfg.val_fraction,
    )
    stamp = cfg.out / "dataset" / "autolabel.json"
    if not cfg.force and stamp.exists() and store.read_json(stamp).get("settings") == key:
        return store.read_json(stamp)["stats"]
    rows = _cluster_rows(clusters, names, set(meta["episodes"]))
    recovered = (
        _recover(cfg, profile, episodes, meta["episodes"], names, rows) if cfg.templates.enabled else {}
    )
    stats: dict[str, Any] = {"boxes": {}, "recovered": {}}
    for name in meta["episodes"]:
        mine = L.dedup(rows.get(name, []) + recovered.get(name, []))
        rows[name] = mine
        L.write_boxes(episodes[name].dir, mine, {"source": "pilot autolabel", "round": "0", "settings": key})
        for r in mine:
            stats["boxes"][r["cls"]] = stats["boxes"].get(r["cls"], 0) + 1
        for r in recovered.get(name, []):
            stats["recovered"][r["cls"]] = stats["recovered"].get(r["cls"], 0) + 1
    used = {n: episodes[n] for n in meta["episodes"]}
    stats["dataset"] = L.export_dataset(
        cfg.out / "dataset",
        used,
        rows,
        profile.class_names,
        cfg.imgsz or profile.detector.imgsz,
        cfg.every,
        cfg.val_fraction,
    )
    store.write_json(stamp, {"settings": key, "stats": stats})
    return stats


def _cluster_rows(clusters: list[dict], names: dict[int, str], episodes: set[str]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for cluster in clusters:
        name = names.get(cluster["id"], N.IGNORE)
        if name == N.IGNORE:
            continue
        for m in cluster["members"]:
            if m["episode"] in episodes:
                rows.setdefault(m["episode"], []).append({**m, "cls": name, "conf": 1.0})
    for name in rows:
        for r in rows[name]:
            r.pop("episode")
    return rows


def _sprites(
    cfg: AutolabelConfig, episodes: dict[str, Episode], order: list[str], names: dict[int, str]
) -> list[Sprite]:
    """The sprite bank: per named class, `per_class` sampled crops spread over its appearance, among the
    whole-looking ones (inside the frame, near the class's median size: farthest points are otherwise the
    fragments, and a fragment of a portal matches every portal)."""
    samples = np.load(cfg.out / SAMPLES)
    cls_of = np.array([names.get(int(c), N.IGNORE) if c >= 0 else N.IGNORE for c in samples["cluster"]])
    log_wh = np.log(np.maximum(samples["box"][:, 2:] - samples["box"][:, :2], 1.0))
    wanted: dict[tuple[int, int], list[tuple[str, np.ndarray]]] = {}
    for cls in sorted(set(cls_of) - {N.IGNORE}):
        idx = np.flatnonzero(cls_of == cls)
        typical = np.abs(log_wh[idx] - np.median(log_wh[idx], axis=0)).max(1) <= np.log(1.25)
        size = {i: _size(episodes[order[samples["episode"][i]]]) for i in idx}
        ok = [i for i in idx[typical] if inside(samples["box"][i], *size[i], cfg.templates.edge)]
        for j in farthest_points(samples["features"][ok], cfg.templates.per_class) if ok else []:
            i = ok[j]
            wanted.setdefault((int(samples["episode"][i]), int(samples["frame"][i])), []).append(
                (cls, samples["box"][i])
            )
    sprites = []
    for ep_index in sorted({e for e, _ in wanted}):
        frames = {f for e, f in wanted if e == ep_index}
        for index, frame in episodes[order[ep_index]].frames():
            if index in frames:
                sprites += [
                    Sprite(str(cls), crop(frame, box, pad=0).copy()) for cls, box in wanted[(ep_index, index)]
                ]
    log.info("sprite bank: %d sprites of %d classes", len(sprites), len({s.cls for s in sprites}))
    return sprites


def _size(episode: Episode) -> tuple[int, int]:
    return episode.meta.width, episode.meta.height


def _recover(
    cfg: AutolabelConfig,
    profile: GameProfile,
    episodes: dict[str, Episode],
    order: list[str],
    names: dict[int, str],
    rows: dict[str, list[dict]],
) -> dict[str, list[dict]]:
    """Template matches not on a label yet, on every `every`-th frame of each episode."""
    from tqdm import tqdm

    sprites = _sprites(cfg, episodes, order, names)
    out: dict[str, list[dict]] = {}
    for name in tqdm(order, desc="templates", unit="episode", leave=False):
        episode = episodes[name]
        valid = valid_mask(panels(profile), *_size(episode))
        by_frame: dict[int, list] = {}
        for r in rows.get(name, []):
            by_frame.setdefault(r["frame"], []).append([r["x1"], r["y1"], r["x2"], r["y2"]])
        for index, frame in episode.frames(every=cfg.every):
            existing = np.array(by_frame.get(index, []), np.float32).reshape(-1, 4)
            for cls, box, score in match_frame(frame, sprites, existing, cfg.templates, valid):
                out.setdefault(name, []).append(
                    {
                        "frame": index,
                        "cls": cls,
                        "x1": float(box[0]),
                        "y1": float(box[1]),
                        "x2": float(box[2]),
                        "y2": float(box[3]),
                        "conf": round(score, 4),
                    }
                )
    return out
