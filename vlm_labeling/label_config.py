"""`pilot label`'s settings: `LabelConfig` (the CLI is built from it), the key-frame spacing and prompt specs
it parses, the labels file name, and `LabelRunError` (a run cannot start or had to stop).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bot.errors import PilotError
from vlm_labeling.client_config import ClientConfig

_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|f)?\s*$")
_PROMPT = re.compile(r"^([a-z][a-z0-9_]*)_v(\d+)$")


class LabelRunError(PilotError):
    """A labelling run cannot start or had to stop (one line: what and why)."""


@dataclass
class LabelConfig:
    """Label recorded episodes with a vision-language model through an OpenAI-compatible API."""

    data: Path  # an episode folder, or a folder searched for episodes
    base_url: str = "http://127.0.0.1:11434/v1"  # API root; /chat/completions is appended (Ollama's default)
    model: str = "qwen2.5vl:7b"  # model name as the server knows it
    every: str = "1s"  # key-frame spacing: "<seconds>s" (e.g. 1s, 0.5s) or "<frames>f" (e.g. 30f)
    context_frames: int = 2  # earlier frames sent before each key frame (0 = the key frame only)
    context_step: str = "0.5s"  # spacing of the context frames, same units as --every
    prompt: str = "mode_v1"  # prompt file vlm_labeling/prompts/<name>_v<N>.md
    name: str = ""  # labels file labels/<name>.parquet; "" = vlm-<model> with unsafe characters as '-'
    cache: Path | None = None  # answer cache folder; None = <data>/.vlm_cache
    api_key_env: str = "ORBIT_VLM_API_KEY"  # NAME of the env variable holding the key (unset = no auth)
    timeout_s: float = 120.0  # s per socket operation; CPU-served VLMs are slow
    max_concurrency: int = 4  # requests in flight at once
    max_retries: int = 4  # retries after 429 / 5xx / timeouts / connection errors, per key frame
    backoff_max_s: float = 30.0  # s, ceiling of the back-off between retries
    structured_output: Literal["auto", "json_schema", "off"] = "auto"  # response_format json_schema use
    max_image_side: int | None = None  # px; frames are shrunk so their longer side fits; None = as recorded
    jpeg_quality: int = 85  # 1..100
    limit: int = 0  # key frames per episode at most (the first ones); 0 = all
    max_consecutive_failures: int = 20  # stop the run after this many failed key frames in a row; 0 = never
    force: bool = False  # process episodes whose run record says they are done (answers still come cached)
    json: bool = False  # print the summary as JSON instead of a table
    progress: bool = True  # progress bar

    def __post_init__(self) -> None:
        self.data = Path(self.data)
        self.cache = None if self.cache in (None, "") else Path(self.cache)
        _parse_interval(self.every, "every")
        _parse_interval(self.context_step, "context_step")
        parse_prompt(self.prompt)
        for name, low in (("context_frames", 0), ("limit", 0), ("max_consecutive_failures", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise LabelRunError(
                    f"--{name.replace('_', '-')}: expected an integer >= {low}, got {value!r}"
                )
        if self.name and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", self.name):
            raise LabelRunError(f"--name: expected letters, digits, '.', '_' or '-', got {self.name!r}")

    @property
    def labels_name(self) -> str:
        return self.name or labels_name_for(self.model)

    @property
    def cache_dir(self) -> Path:
        return self.cache or self.data / ".vlm_cache"

    def client_config(self) -> ClientConfig:
        return ClientConfig(
            base_url=self.base_url,
            model=self.model,
            api_key_env=self.api_key_env,
            timeout_s=self.timeout_s,
            max_concurrency=self.max_concurrency,
            max_retries=self.max_retries,
            backoff_max_s=self.backoff_max_s,
            structured_output=self.structured_output,
            max_image_side=self.max_image_side,
            jpeg_quality=self.jpeg_quality,
        )


def labels_name_for(model: str) -> str:
    """ "qwen2.5vl:7b" -> "vlm-qwen2.5vl-7b": a file name that also parses as a label source spec."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-.") or "model"
    return f"vlm-{slug}"


def _parse_interval(spec: str, name: str) -> tuple[float, str]:
    match = _EVERY.match(str(spec))
    if not match or float(match.group(1)) <= 0:
        raise LabelRunError(f"--{name.replace('_', '-')}: expected e.g. 1s, 0.5s or 30f (> 0), got {spec!r}")
    return float(match.group(1)), match.group(2) or "s"


def interval_s(spec: str, fps: float) -> float:
    value, unit = _parse_interval(spec, "every")
    return value if unit == "s" else value / fps


def parse_prompt(spec: str) -> tuple[str, int]:
    match = _PROMPT.match(spec)
    if not match:
        raise LabelRunError(f"--prompt: expected <name>_v<N> (e.g. mode_v1), got {spec!r}")
    return match.group(1), int(match.group(2))
