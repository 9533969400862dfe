"""One chat-completions POST over the standard library's `http.client`, and the reading of its reply.

Every failure becomes one of the package's errors (VLMHTTPError, VLMTimeout, VLMConnectionError, or
InvalidAnswer for a 200 that is not a chat completion), with a one-line message naming the URL. The API key
is held here only, sent in the Authorization header and scrubbed from every server text quoted. Why
`http.client`: docs/notes/vlm_labeling.md, "vlm_labeling/transport.py".
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from vlm_labeling.errors import ConfigError, InvalidAnswer, VLMConnectionError, VLMHTTPError, VLMTimeout
from vlm_labeling.records import Usage

USER_AGENT = "orbit-pilot-vlm-labeling/1"
EXCERPT_CHARS = 300


@dataclass(frozen=True)
class ChatReply:
    """The parts of a chat completion the client uses."""

    content: str
    usage: Usage
    finish_reason: str | None


class Transport:
    """POSTs JSON to `<base_url>/chat/completions`; thread-safe (a fresh connection per request)."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"base_url: expected http(s)://host[:port]/path, got {base_url!r}")
        self._scheme = parts.scheme
        self._host = parts.hostname
        try:
            self._port = parts.port
        except ValueError:
            raise ConfigError(f"base_url: expected a numeric port, got {base_url!r}") from None
        self._path = parts.path.rstrip("/") + "/chat/completions" + (f"?{parts.query}" if parts.query else "")
        # Shown in logs and errors; any user:password@ part of the address is left out.
        self.url = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{self._path}"
        self._timeout_s = timeout_s
        self.__api_key = api_key or None  # private; __repr__ says only whether it is set
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None

    def __repr__(self) -> str:
        return f"Transport({self.url!r}, api_key={'set' if self.__api_key else 'unset'})"

    @property
    def has_api_key(self) -> bool:
        return self.__api_key is not None

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the API key replaced."""
        return text.replace(self.__api_key, "[redacted]") if self.__api_key else text

    def post_chat(self, body: dict[str, Any]) -> ChatReply:
        """Send one chat-completions request and return its reply; raises the errors listed above."""
        status, headers, raw = self._post(json.dumps(body, allow_nan=False).encode("utf-8"))
        if not 200 <= status < 300:
            raise VLMHTTPError(
                status, self.url, self._excerpt(raw), _retry_after_s(headers.get("Retry-After"))
            )
        return self._read_reply(raw)

    def _post(self, data: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if self.__api_key:
            headers["Authorization"] = f"Bearer {self.__api_key}"
        conn = self._connection()
        try:
            conn.request("POST", self._path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        except TimeoutError:
            raise VLMTimeout(f"no answer from POST {self.url} within {self._timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as err:
            # OSError covers refused/reset/broken pipe/TLS; HTTPException covers a reply cut short.
            reason = self.redact(f"{type(err).__name__}: {err}")
            raise VLMConnectionError(f"POST {self.url} failed: {reason}") from None
        finally:
            conn.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout_s, context=self._ssl
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)

    def _read_reply(self, raw: bytes) -> ChatReply:
        try:
            payload = json.loads(raw)
            message = payload["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise InvalidAnswer(
                f"the server's reply is not a chat completion: {self._excerpt(raw)}"
            ) from None
        finish_reason = payload["choices"][0].get("finish_reason")
        return ChatReply(
            content=_message_text(message),
            usage=_usage(payload.get("usage")),
            finish_reason=finish_reason if isinstance(finish_reason, str) else None,
        )

    def _excerpt(self, raw: bytes) -> str:
        text = " ".join(raw.decode("utf-8", errors="replace").split())
        text = self.redact(text)
        return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."


def _message_text(message: Any) -> str:
    """The assistant text; some servers send a list of content parts instead of a string."""
    if not isinstance(message, dict):
        raise InvalidAnswer("the server's reply has no choices[0].message object")
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if isinstance(content, str) and content.strip():
        return content
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        raise InvalidAnswer(f"the model refused: {refusal[:EXCERPT_CHARS]}")
    raise InvalidAnswer("the model's answer is empty")


def _usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        return Usage()

    def count(name: str) -> int | None:
        value = data.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    return Usage(prompt_tokens=count("prompt_tokens"), completion_tokens=count("completion_tokens"))


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: a number (RFC 9110 says integer; fractions are accepted) or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None
