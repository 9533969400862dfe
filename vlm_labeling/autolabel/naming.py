"""Naming each cluster once, as one of the profile's classes or "ignore": from a names file, and for the
clusters still unnamed from a VLM (the montage, the closed class list, a JSON schema, answers cached).

    --names NAMES.json {"<cluster id>": "<class or ignore>"} ──┐
    VLM: montage + class list (cluster_v1.md) ─────────────────┼──▶ WORK/names.json ──▶ labels
                                              every new or changed name ──▶ WORK/decisions.jsonl

Names are kept across reruns while the clusters are unchanged (names.json holds the clusters' fingerprint).
"""

from __future__ import annotations

import json
import logging
import string
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bot.profile import GameProfile
from vlm_labeling.autolabel.errors import AutolabelError
from vlm_labeling.autolabel.store import read_json, record_decision, write_json

log = logging.getLogger(__name__)

IGNORE = "ignore"
NAMES = "names.json"
PROMPT_DIR = Path(__file__).resolve().parent


def allowed_names(profile: GameProfile) -> list[str]:
    return [*profile.class_names, IGNORE]


def load_names_file(path: Path, cluster_ids: set[int], profile: GameProfile) -> dict[int, str]:
    """{cluster id: class or "ignore"} from a names file; each problem is one line naming the file and key."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AutolabelError(f"{path}: no such names file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AutolabelError(f"{path}: not readable as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise AutolabelError(
            f'{path}: expected an object {{"<cluster id>": "<class or ignore>"}}, got {type(data).__name__}'
        )
    allowed = allowed_names(profile)
    names: dict[int, str] = {}
    for key, value in data.items():
        if not str(key).isdigit() or int(key) not in cluster_ids:
            raise AutolabelError(
                f"{path}: key {key!r} is not a cluster id (clusters: 0..{max(cluster_ids, default=-1)})"
            )
        if value not in allowed:
            raise AutolabelError(f"{path}: cluster {key}: unknown class {value!r}; expected one of {allowed}")
        names[int(key)] = value
    return names


def load_names(work: Path, fingerprint: str) -> dict[int, dict[str, Any]]:
    """The names decided so far for these clusters (empty when the clusters changed since)."""
    path = work / NAMES
    if not path.exists():
        return {}
    data = read_json(path)
    if data.get("clusters") != fingerprint:
        log.warning("%s: names for other clusters (they were recomputed); the clusters are named anew", path)
        return {}
    return {int(k): v for k, v in data["names"].items()}


def save_names(work: Path, fingerprint: str, names: dict[int, dict[str, Any]]) -> None:
    write_json(
        work / NAMES, {"clusters": fingerprint, "names": {str(k): v for k, v in sorted(names.items())}}
    )


def apply_file(work: Path, names: dict[int, dict[str, Any]], given: dict[int, str], source: Path) -> int:
    """Take the names of a names file (a person's decisions); returns how many were new or changed."""
    changed = 0
    for cluster, name in sorted(given.items()):
        if names.get(cluster, {}).get("name") == name:
            continue
        names[cluster] = {"name": name, "by": f"names file {source}"}
        record_decision(
            work, f"person (names file {source})", True, "name cluster", f"cluster {cluster}", name
        )
        changed += 1
    return changed


def unnamed(clusters: list[dict], names: dict[int, dict[str, Any]]) -> list[int]:
    return [c["id"] for c in clusters if c["id"] not in names]


# ------------------------------------------------------------------------------------------------ the VLM


def cluster_prompt(profile: GameProfile):
    """The cluster prompt with this game's closed class list filled in."""
    from vlm_labeling.prompts import Prompt, load_prompt

    base = load_prompt("cluster", 1, directory=PROMPT_DIR)
    lines = "\n".join(f"- {c.name.upper()} ({c.role})" for c in profile.classes)
    fill = {"game": profile.name.replace("$", "$$"), "classes": lines.replace("$", "$$")}
    system = string.Template(base.system).safe_substitute(fill)
    user = string.Template(base.user).safe_substitute(fill)
    return Prompt(name=base.name, version=base.version, system=system, user=user, path=base.path)


def answer_modes(profile: GameProfile) -> dict[str, str]:
    """Upper-cased answer -> name (the client's schema upper-cases the answer's "mode")."""
    upper = {name.upper(): name for name in allowed_names(profile)}
    if len(upper) != len(allowed_names(profile)):
        raise AutolabelError(
            f"{profile.path}: classes differ only in case; a VLM answer could not tell them apart"
        )
    return upper


def cluster_facts(cluster: dict, moving: float) -> dict[str, Any]:
    """What the prompt tells about a cluster besides its montage: box sizes, how often it moves."""
    boxes = np.array([[m["x2"] - m["x1"], m["y2"] - m["y1"]] for m in cluster["members"]], np.float32)
    return {
        "boxes": int(cluster["size"]),
        "median_box_width_px": float(np.median(boxes[:, 0])),
        "median_box_height_px": float(np.median(boxes[:, 1])),
        "share_of_boxes_moving_against_the_background": round(moving, 2),
    }


def vlm_names(
    work: Path,
    clusters: list[dict],
    todo: list[int],
    profile: GameProfile,
    client,
    min_confidence: float,
    moving: dict[int, float],
) -> dict[int, dict[str, Any]]:
    """Ask the VLM for each cluster in `todo`; answers below `min_confidence` or unusable stay unnamed."""
    from vlm_labeling.errors import VLMHTTPError
    from vlm_labeling.records import LabelRequest

    modes = answer_modes(profile)
    by_id = {c["id"]: c for c in clusters}
    out: dict[int, dict[str, Any]] = {}
    for cid in todo:
        cluster = by_id[cid]
        image = cv2.imread(str(work / cluster["montage"]))
        if image is None:
            raise AutolabelError(
                f"{work / cluster['montage']}: montage missing or unreadable; rerun with --force"
            )
        facts = cluster_facts(cluster, moving.get(cid, 0.0))
        request = LabelRequest(key_frame=image, hud=facts, request_id=f"cluster {cid}")
        start = time.monotonic()
        try:
            result = client.label(request)
        except VLMHTTPError as exc:
            raise AutolabelError(f"VLM at {client.url}: {exc}") from None
        seconds = time.monotonic() - start
        if not result.ok:
            log.warning(
                "cluster %d: the VLM gave no usable answer (%s); left unnamed", cid, result.failure_reason
            )
            continue
        name, conf = modes[result.answer.mode], result.answer.confidence
        if conf < min_confidence:
            log.warning(
                "cluster %d: the VLM said %r with confidence %.2f < %.2f; left unnamed",
                cid,
                name,
                conf,
                min_confidence,
            )
            continue
        out[cid] = {"name": name, "by": f"vlm {client.config.model}", "confidence": conf}
        record_decision(
            work,
            f"vlm {client.config.model}",
            False,
            "name cluster",
            f"cluster {cid}",
            name,
            seconds,
            confidence=conf,
            rationale=result.answer.rationale,
            cached=result.cached,
        )
    return out


def make_client(work: Path, profile: GameProfile, client_config):
    """A VLMClient asking the cluster prompt with this profile's names; answers cached in WORK/vlm_cache."""
    from vlm_labeling.cache import AnswerCache
    from vlm_labeling.client import VLMClient

    modes = tuple(answer_modes(profile))
    cache = AnswerCache(work / "vlm_cache", modes=modes)
    return VLMClient(client_config, cache=cache, prompt=cluster_prompt(profile), modes=modes)
