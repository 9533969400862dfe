"""The run record beside each episode's labels (`labels/<name>.json`: settings, counts, tokens; never the API
key), the per-episode counts it holds, and the rule that makes an episode already labelled (same settings,
no failures, labels file present), so a rerun skips it without decoding its video.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.recordings.episode import Episode
from vlm_labeling.client import VLMClient
from vlm_labeling.label_config import LabelConfig, interval_s
from vlm_labeling.prompts import Prompt
from vlm_labeling.records import LabelResult

RECORD_FORMAT = 1
# The run record fields that must match for an episode to count as already labelled.
_SAME_RUN = ("model", "prompt", "every_s", "context_frames", "context_step_s", "image")


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


def record_settings(cfg: LabelConfig, prompt: Prompt, fps: float) -> dict[str, Any]:
    """The settings that decide the answers; a rerun with the same ones skips a complete episode."""
    return {
        "model": cfg.model,
        "prompt": prompt.version_id,
        "every_s": interval_s(cfg.every, fps),
        "context_frames": cfg.context_frames,
        "context_step_s": interval_s(cfg.context_step, fps),
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


def done_summary(episode_dir: Path, name: str) -> EpisodeSummary:
    """A skipped episode's counts, from its run record (its labels are there, nothing was asked now)."""
    record = json.loads(_record_path(episode_dir, name).read_text())
    return EpisodeSummary(episode_dir.name, record["key_frames"], record["labelled"], skipped=True)


def write_record(episode: Episode, cfg: LabelConfig, client: VLMClient, summary: EpisodeSummary) -> None:
    """Write labels/<name>.json atomically (a temporary file moved into place)."""
    record = {
        "format": RECORD_FORMAT,
        **record_settings(cfg, client.prompt, float(episode.meta.fps)),
        **{k: v for k, v in asdict(summary).items() if k not in ("episode", "skipped")},
        "base_url": cfg.base_url,
        "client": client.config.to_dict(),  # the key's variable name only, never the key
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = _record_path(episode.dir, cfg.labels_name)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
