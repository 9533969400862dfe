"""Appearance clusters of tracked crops, and the clusters file with one montage per cluster.

    tracks ──up to crops_per_track crops a track──▶ features (features.py) ──PCA──▶ HDBSCAN
        ──each track takes its crops' majority cluster──▶ clusters, largest first
        ──▶ WORK/clusters.json  [{"id", "size", "montage", "members": [{"episode", "frame", x1..y2}]}]
            WORK/montages/cluster_<id>.png   a grid of crops, each from a different track when it can

A cluster is named once (naming.py), and its name then holds for every box of every member track.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from bot.recordings.episode import Episode
from validation import check_int
from vlm_labeling.autolabel.features import FeatureWeights, crop, describe, thumbnail

log = logging.getLogger(__name__)

THUMB = 40  # px, side of a montage tile


@dataclass
class ClusterConfig:
    """How crops are sampled and clustered."""

    crops_per_track: int = 6  # crops sampled evenly over each track's frames
    dims: int = 24  # principal components the features are reduced to before clustering
    min_cluster_size: int = 0  # HDBSCAN's smallest cluster in crops; 0 = 1 % of the crops, at least 5
    min_samples: int = 3  # HDBSCAN's density smoothing (larger = more crops called noise)
    montage_tiles: int = 36  # crops in a montage (a square grid)
    # the largest clusters kept: each is one decision for a person, and the issue allows 50 per game with
    # the audit's (training/autolabel.py audit_size 20); smaller ones are left unlabelled
    max_clusters: int = 30

    def __post_init__(self) -> None:
        check_int(self, "crops_per_track", 1)
        check_int(self, "dims", 2)
        check_int(self, "min_cluster_size", 0)
        check_int(self, "min_samples", 1)
        check_int(self, "montage_tiles", 1)
        check_int(self, "max_clusters", 1)


def sample_rows(tracks: pa.Table, per_track: int) -> np.ndarray:
    """Indices of up to `per_track` rows of each track, evenly spaced over its frames."""
    track = tracks.column("track").to_numpy()
    frame = tracks.column("frame").to_numpy()
    picked = []
    for tid in np.unique(track):
        rows = np.flatnonzero(track == tid)
        rows = rows[np.argsort(frame[rows], kind="stable")]
        picked.append(
            rows[np.unique(np.linspace(0, len(rows) - 1, min(per_track, len(rows))).round().astype(int))]
        )
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def episode_crops(episode: Episode, tracks: pa.Table, cfg: ClusterConfig, weights: FeatureWeights) -> dict:
    """Sampled crops of one episode: frame, track, box, features and montage tiles (one decoding pass)."""
    rows = sample_rows(tracks, cfg.crops_per_track)
    frame = tracks.column("frame").to_numpy()[rows]
    track = tracks.column("track").to_numpy()[rows]
    boxes = np.stack([tracks.column(c).to_numpy()[rows] for c in ("x1", "y1", "x2", "y2")], 1).astype(
        np.float32
    )
    feats = []
    wanted = {int(f) for f in frame}
    for index, image in episode.frames():
        if index not in wanted:
            continue
        for i in np.flatnonzero(frame == index):
            tile = thumbnail(crop(image, boxes[i], 2), THUMB)
            feats.append((i, describe(crop(image, boxes[i]), boxes[i], weights), tile))
    feats.sort(key=lambda t: t[0])
    dim = len(feats[0][1]) if feats else 0
    return {
        "frame": frame.astype(np.int32),
        "track": track.astype(np.int32),
        "box": boxes.reshape(-1, 4),
        "features": np.stack([f[1] for f in feats]) if feats else np.zeros((0, dim), np.float32),
        "tiles": np.stack([f[2] for f in feats]) if feats else np.zeros((0, THUMB, THUMB, 3), np.uint8),
    }


def reduce(features: np.ndarray, dims: int) -> np.ndarray:
    """Features centred and projected on their first `dims` principal components."""
    centred = features - features.mean(0, keepdims=True)
    if len(centred) <= dims:
        return centred
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:dims].T


def cluster_crops(features: np.ndarray, cfg: ClusterConfig) -> np.ndarray:
    """(N,) HDBSCAN label of each crop, -1 = noise."""
    from sklearn.cluster import HDBSCAN

    if len(features) < 2:
        return np.zeros(len(features), np.int64)
    size = cfg.min_cluster_size or max(5, len(features) // 100)
    size = min(size, len(features))
    model = HDBSCAN(min_cluster_size=max(2, size), min_samples=min(cfg.min_samples, len(features)), copy=True)
    return model.fit_predict(reduce(features, cfg.dims)).astype(np.int64)


def vote_tracks(keys: np.ndarray, labels: np.ndarray, reduced: np.ndarray) -> dict[Any, int]:
    """track key -> cluster: the majority of its crops' labels, noise left out; a track whose crops are all
    noise joins the cluster of the nearest labelled crop."""
    assigned = labels >= 0
    out: dict[Any, int] = {}
    for key in np.unique(keys):
        mine = keys == key
        votes = labels[mine & assigned]
        if len(votes):
            out[key] = int(np.bincount(votes).argmax())
        elif assigned.any():
            centre = reduced[mine].mean(0)
            nearest = np.argmin(((reduced[assigned] - centre) ** 2).sum(1))
            out[key] = int(labels[assigned][nearest])
    return out


def montage(tiles: np.ndarray, keys: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """A square grid (RGB) of up to `count` tiles, drawn from as many different tracks as possible."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(tiles))
    first = {}
    for i in order:
        first.setdefault(keys[i], i)
    picked = list(first.values())[:count]
    picked += [i for i in order if i not in set(picked)][: count - len(picked)]
    side = int(np.ceil(np.sqrt(len(picked))))
    grid = np.full((side * (THUMB + 2), side * (THUMB + 2), 3), 40, np.uint8)
    for n, i in enumerate(picked):
        r, c = divmod(n, side)
        grid[
            r * (THUMB + 2) + 1 : r * (THUMB + 2) + 1 + THUMB,
            c * (THUMB + 2) + 1 : c * (THUMB + 2) + 1 + THUMB,
        ] = tiles[i]
    return grid


def write_montage(path: Path, grid: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    cv2.imwrite(str(tmp), grid[:, :, ::-1])
    tmp.replace(path)
