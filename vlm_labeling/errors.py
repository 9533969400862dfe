"""Domain errors of the VLM labelling layer, all under `VLMError`.

Two families:

- configuration / input errors (`ConfigError`, `PromptError`, `RequestError`) raised at once, before any
  request is sent;
- errors about what came back over the network (`VLMHTTPError`, `VLMTimeout`, `VLMConnectionError`,
  `InvalidAnswer`). The client turns the transient ones into retries and the rest into failed results; only
  errors that make the whole run pointless (bad key, wrong URL or model, see `client.ABORT_STATUSES`) escape
  `VLMClient.label`.

No message ever contains the API key: the transport redacts it from every server text it quotes.
"""

from __future__ import annotations


class VLMError(Exception):
    """Base class of every error raised by `vlm_labeling`."""


class ConfigError(VLMError, ValueError):
    """A config field has a bad value; the message names the field, what was expected and what was found."""


class PromptError(VLMError):
    """A prompt file is missing or malformed, or `Prompt.render` got missing or unknown fields."""


class RequestError(VLMError, ValueError):
    """A `LabelRequest` cannot be sent as given (unsupported image type, duplicate track ids, ...)."""


class VLMHTTPError(VLMError):
    """The server answered with an HTTP error status.

    `str(err)` is one line: status, method and URL, then an excerpt of the body.
    """

    def __init__(self, status: int, url: str, body_excerpt: str, retry_after_s: float | None = None):
        self.status = status
        self.url = url
        self.body_excerpt = body_excerpt
        self.retry_after_s = retry_after_s
        super().__init__(f"HTTP {status} from POST {url}: {body_excerpt or '(empty body)'}")


class StructuredOutputUnsupported(VLMHTTPError):
    """The server rejected `response_format` while `structured_output="json_schema"` forced it."""

    def __str__(self) -> str:
        return (
            f"{super().__str__()} (the server does not accept response_format json_schema; "
            'use structured_output="auto" or "off")'
        )


class VLMTimeout(VLMError):
    """No answer (or no further bytes of it) within `ClientConfig.timeout_s`."""


class VLMConnectionError(VLMError):
    """The connection could not be opened or broke before a complete answer arrived."""


class InvalidAnswer(VLMError):
    """The model's answer is not a valid label; `reason` says precisely which field is wrong and why."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)
