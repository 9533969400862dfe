"""The work folder of `pilot autolabel` and how stages find their finished outputs there.

    WORK/config.json                  the resolved settings of the last run
    WORK/episodes/<episode>/tracks.parquet, crops.npz   per-episode stage outputs (settings hash inside)
    WORK/clusters.json, montages/     the clusters; WORK/names.json, decisions.jsonl   naming
    WORK/vlm_cache/                   VLM answers;  WORK/dataset/   the YOLO dataset
    WORK/audit/                       self-training's audit (training/autolabel.py), answered in review.py

Every file is written to a temporary name and renamed, so a killed run leaves whole files or none; a file
whose settings hash differs from the current settings is stale and is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DECISIONS = "decisions.jsonl"
CLUSTERS = "clusters.json"
CLUSTERS_META = "clusters.meta.json"


def settings_hash(*parts: Any) -> str:
    """16 hex digits identifying the settings (any JSON-able values) a stage output was made with."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_table(path: Path, table: pa.Table, settings: str) -> pa.Table:
    """Write `table` as parquet with the settings hash in its schema metadata; returns it as written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(table.schema.metadata or {})
    meta[b"settings"] = settings.encode()
    table = table.replace_schema_metadata(meta)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return table


def fresh_table(path: Path, settings: str) -> pa.Table | None:
    """The table at `path` when it was made with `settings`, else None (missing, stale or unreadable)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        return None
    return table if (table.schema.metadata or {}).get(b"settings") == settings.encode() else None


def write_arrays(path: Path, settings: str, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, settings=np.array(settings), **arrays)
    os.replace(tmp, path)


def fresh_arrays(path: Path, settings: str) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["settings"]) != settings:
                return None
            return {k: data[k] for k in data.files if k != "settings"}
    except (OSError, KeyError, ValueError):
        return None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record_decision(
    work: Path,
    who: str,
    human: bool,
    what: str,
    subject: str,
    value: Any,
    seconds: float | None = None,
    **detail: Any,
) -> dict[str, Any]:
    """Append one decision to WORK/decisions.jsonl: who (a person, a names file, a VLM), what about what,
    the answer and how long it took (None when not measured)."""
    entry = {
        "time": now(),
        "who": who,
        "human": human,
        "what": what,
        "subject": subject,
        "value": value,
        "seconds": None if seconds is None else round(float(seconds), 3),
        **detail,
    }
    with open(work / DECISIONS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")
    return entry


def read_decisions(work: Path) -> list[dict[str, Any]]:
    path = work / DECISIONS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
