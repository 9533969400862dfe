"""`pilot label`: ask a vision-language model for the mode (and target) at key moments of recorded episodes.

Answers are cached, so a rerun or a resumed run asks only what is not answered yet; the API key is read
from the variable named by `--api-key-env`, never written. Exit code 0 when every key frame got a label.
Design: docs/notes/vlm_labeling.md. Examples (episodes perceived first with `pilot perceive`):

    pilot label --data data/recordings/arena --base-url http://127.0.0.1:11434/v1 --model qwen2.5vl:7b
    pilot label --data data/recordings/arena --base-url http://127.0.0.1:8000/v1 \\
        --model Qwen/Qwen2.5-VL-7B-Instruct --every 2s --context-frames 3 --max-concurrency 8
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict
from typing import Any

import tyro

from bot.recordings.episode import find_episodes, open_episode, write_labels
from vlm_labeling.cache import AnswerCache
from vlm_labeling.client import VLMClient
from vlm_labeling.errors import VLMError
from vlm_labeling.label_config import LabelConfig, LabelRunError, parse_prompt
from vlm_labeling.plan import EpisodeInputs, plan_episode, request_id, requests
from vlm_labeling.prompts import load_prompt
from vlm_labeling.record import EpisodeSummary, done_summary, is_complete, record_settings, write_record
from vlm_labeling.records import LabelResult

log = logging.getLogger(__name__)


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
    write_record(inputs.episode, cfg, client, summary)
    return summary


def run(cfg: LabelConfig) -> list[EpisodeSummary]:
    """Label every episode under `cfg.data`; returns one summary per episode (skipped ones marked)."""
    paths = find_episodes(cfg.data)
    if not paths:
        raise LabelRunError(f"--data {cfg.data}: no episodes found")
    name, version = parse_prompt(cfg.prompt)
    try:
        client = VLMClient(cfg.client_config(), AnswerCache(cfg.cache_dir), load_prompt(name, version))
    except VLMError as exc:
        raise LabelRunError(str(exc)) from None
    todo, summaries = [], []
    for path in paths:
        fps = float(open_episode(path).meta.fps)
        if not cfg.force and is_complete(path, cfg.labels_name, record_settings(cfg, client.prompt, fps)):
            summaries.append(done_summary(path, cfg.labels_name))
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
