"""Where and how the VLM client asks: `ClientConfig` (server, model, API key variable, timeouts, retries,
structured output, image encoding), checked field by field at construction. The key itself is never a field.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from vlm_labeling.errors import ConfigError
from vlm_labeling.images import ImageFormat

StructuredOutput = Literal["auto", "json_schema", "off"]
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")  # conventional names only: a pasted key rarely fits


@dataclass
class ClientConfig:
    """Where and how to ask. The API key itself is never a field: it is read from `api_key_env`."""

    base_url: str = "http://127.0.0.1:11434/v1"  # API root; /chat/completions is appended (Ollama's default)
    model: str = "qwen2.5vl:7b"  # model name as the server knows it
    api_key_env: str = "ORBIT_VLM_API_KEY"  # NAME of the env variable with the key; unset = no auth
    timeout_s: float = 120.0  # s per socket operation (connect, each read); CPU-served VLMs are slow
    max_concurrency: int = 4  # requests in flight at once
    max_retries: int = 4  # retries after transient failures (429, 5xx, timeouts, connection errors)
    max_invalid_retries: int = 2  # times an invalid answer is asked again before the request fails
    backoff_base_s: float = 1.0  # s, first back-off ceiling; doubles per retry
    backoff_max_s: float = 30.0  # s, back-off ceiling
    retry_after_max_s: float = 120.0  # s, cap on a server's Retry-After
    structured_output: StructuredOutput = (
        "auto"  # "auto" | "json_schema" | "off" (docs/notes/vlm_labeling.md)
    )
    # "auto": prose answers in a row (despite response_format) that turn it off, the server evidently ignoring
    # it; one answer in JSON resets the count, and a 400 naming response_format turns it off at once
    prose_limit: int = 3
    max_tokens: int = 256  # completion tokens per answer
    temperature: float = 0.0  # sampling temperature; 0 = the model's most likely answer
    image_format: ImageFormat = "jpeg"  # how numpy frames are encoded ("jpeg" | "png")
    jpeg_quality: int = 85  # 1..100
    max_image_side: int | None = None  # px; numpy frames are shrunk to fit (boxes follow); None = as given

    def __post_init__(self) -> None:
        _check_url(self.base_url)
        self.base_url = self.base_url.rstrip("/")
        _expect(isinstance(self.model, str) and self.model.strip() != "", "model", "a model name", self.model)
        if not isinstance(self.api_key_env, str) or not _ENV_NAME.match(self.api_key_env):
            # The value is not echoed: a key pasted here by mistake must not reach a log.
            raise ConfigError(
                "api_key_env: expected the NAME of an environment variable (e.g. ORBIT_VLM_API_KEY), "
                "got a value that is not one (not shown, in case it is the key itself)"
            )
        for name in ("timeout_s", "backoff_base_s", "backoff_max_s", "retry_after_max_s"):
            _expect_number(self, name, low=0.0, low_open=name == "timeout_s")
        for name, low in (
            ("max_concurrency", 1),
            ("max_retries", 0),
            ("max_invalid_retries", 0),
            ("max_tokens", 1),
            ("prose_limit", 1),
        ):
            _expect_int(self, name, low)
        _expect_number(self, "temperature", low=0.0, high=2.0)
        _expect(
            self.structured_output in ("auto", "json_schema", "off"),
            "structured_output",
            "'auto', 'json_schema' or 'off'",
            self.structured_output,
        )
        _expect(self.image_format in ("jpeg", "png"), "image_format", "'jpeg' or 'png'", self.image_format)
        _expect_int(self, "jpeg_quality", 1, 100)
        if self.max_image_side is not None:
            _expect_int(self, "max_image_side", 16)

    def to_dict(self) -> dict[str, Any]:
        """For the run's config.json (holds the variable's name, never the key)."""
        return asdict(self)


def _check_url(url: Any) -> None:
    if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(f"base_url: expected http(s)://host[:port][/path], got {url!r}")
    if "@" in url.split("/", 3)[2]:
        # Not echoed: user:password@ in the address is a credential.
        raise ConfigError(
            "base_url: credentials in the address are not supported; put the key in the variable "
            "named by api_key_env"
        )
    try:
        _ = urlsplit(url).port  # urllib parses the port lazily and raises here
    except ValueError:
        raise ConfigError(f"base_url: expected a numeric port, got {url!r}") from None
    if url.rstrip("/").endswith("/chat/completions"):
        raise ConfigError(
            f"base_url: expected the API root (e.g. http://127.0.0.1:8000/v1); /chat/completions "
            f"is appended, got {url!r}"
        )


def _expect(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"{name}: expected {expected}, got {got!r}")


def _expect_int(cfg: ClientConfig, name: str, low: int, high: int | None = None) -> None:
    value = getattr(cfg, name)
    ok = (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )
    _expect(ok, name, f"an integer >= {low}" + ("" if high is None else f" and <= {high}"), value)


def _expect_number(
    cfg: ClientConfig, name: str, low: float, high: float | None = None, low_open: bool = False
) -> None:
    value = getattr(cfg, name)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value <= high)
    bound = f"> {low:g}" if low_open else f">= {low:g}"
    _expect(ok, name, f"a number {bound}" + ("" if high is None else f" and <= {high:g}"), value)
