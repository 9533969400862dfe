"""On-disk cache of validated VLM answers, so that a rerun (or a resumed run) asks nothing twice.

    <directory>/<key[:2]>/<key>.json      {"format": 1, "key": ..., "result": LabelResult.to_dict()}

The key hashes everything that decides the answer (model, prompt version, schema, images, HUD and object
text, allowed target ids). Only ok results are cached; entries are written atomically and a bad one reads
as a miss. Why: docs/notes/vlm_labeling.md, "vlm_labeling/cache.py".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vlm_labeling.errors import InvalidAnswer
from vlm_labeling.records import LabelResult
from vlm_labeling.schema import MODES, SCHEMA_VERSION

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


def cache_key(
    *,
    model: str,
    prompt_version: str,
    image_sha256s: Iterable[str],
    hud_text: str,
    objects_text: str,
    track_ids: Iterable[int],
    modes: Iterable[str] = MODES,
    schema_version: int = SCHEMA_VERSION,
) -> str:
    """sha256 hex digest identifying one question to one model (see the module docstring)."""
    material = {
        "model": model,
        "prompt": prompt_version,
        "schema": schema_version,
        "modes": list(modes),
        "images": list(image_sha256s),  # order matters: context frames oldest first, key frame last
        "hud": hud_text,
        "objects": objects_text,
        "track_ids": sorted(track_ids),
    }
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AnswerCache:
    """get/put of `LabelResult`s by cache key, one small JSON file per entry. Safe across threads."""

    def __init__(self, directory: Path | str, modes: Iterable[str] = MODES):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._modes = tuple(modes)

    def __repr__(self) -> str:
        return f"AnswerCache({str(self.directory)!r})"

    def path_for(self, key: str) -> Path:
        _check_key(key)
        return self.directory / key[:2] / f"{key}.json"

    def __contains__(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("??/*.json"))

    def get(self, key: str) -> LabelResult | None:
        """The cached result for `key`, or None (also for an unreadable entry, which is logged)."""
        path = self.path_for(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            logger.warning("ignoring unreadable cache entry %s: %s", path, err)
            return None
        try:
            return _result_from_entry(entry, key, self._modes)
        except (KeyError, TypeError, ValueError, InvalidAnswer) as err:
            logger.warning("ignoring inconsistent cache entry %s: %s", path, err)
            return None

    def put(self, key: str, result: LabelResult) -> bool:
        """Store `result` if it is cacheable (status ok); returns whether it was stored."""
        if not result.ok:
            return False
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"format": CACHE_FORMAT, "key": key, "result": result.to_dict()}
        _write_atomically(path, json.dumps(entry, indent=1, ensure_ascii=False, allow_nan=False))
        return True


def _result_from_entry(entry: Any, key: str, modes: tuple[str, ...]) -> LabelResult:
    if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT:
        raise ValueError(f"expected a format-{CACHE_FORMAT} entry")
    if entry.get("key") != key:
        raise ValueError(f"entry is for key {entry.get('key')!r}")
    result = LabelResult.from_dict(entry["result"], modes)
    if not result.ok:
        raise ValueError("entry holds a failed result")
    return result


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())  # the rename must not reach the disk before the data does
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def _check_key(key: str) -> None:
    if not isinstance(key, str) or len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"cache key: expected a sha256 hex digest, got {key!r}")
