"""The VLM client: asks any OpenAI-compatible chat-completions server for the play mode at a key frame.

    LabelRequest -> encode frames, render prompt -> cache key --hit--> LabelResult(cached=True), no POST
        miss -> POST {base_url}/chat/completions   (408, 429, 5xx, timeout, broken connection: wait, resend)
             -> one JSON object -> parse_answer -> ok: cache.put -> LabelResult
                invalid: ask again with the reason (at most max_invalid_retries), then status "failed"

HTTP 401/403/404/405 stop the run (`ABORT_STATUSES`). "auto" structured output drops `response_format`
for the rest of the run on evidence, and logs which: a 400/422/500 that names it, or `prose_limit` prose
answers in a row (one JSON answer resets the count). Retry, fallback and caching policy:
docs/notes/vlm_labeling.md, "vlm_labeling/client.py". The config is in client_config.py.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sized
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from vlm_labeling.cache import AnswerCache, cache_key
from vlm_labeling.client_config import ClientConfig
from vlm_labeling.errors import (
    InvalidAnswer,
    PromptError,
    StructuredOutputUnsupported,
    VLMConnectionError,
    VLMHTTPError,
    VLMTimeout,
)
from vlm_labeling.images import EncodedImage, encode_image
from vlm_labeling.prompts import Prompt, RenderedPrompt, load_prompt
from vlm_labeling.records import LabelRequest, LabelResult, Usage
from vlm_labeling.schema import (
    MODES,
    Answer,
    extract_json_object,
    load_json_object,
    parse_answer,
    response_format,
)
from vlm_labeling.transport import ChatReply, Transport

logger = logging.getLogger(__name__)

# Statuses that mean every further request would fail the same way: stop the run instead of failing each.
ABORT_STATUSES = frozenset({401, 403, 404, 405})
RETRY_STATUSES = frozenset({408, 429})  # plus every 5xx
# A server that cannot honour response_format says so with 400 or 422 (OpenAI, vLLM, LM Studio, llama.cpp);
# some llama.cpp builds answer 500 when turning the schema into a grammar fails.
_FORMAT_REJECTION_STATUSES = frozenset({400, 422, 500})
_RESPONSE_FORMAT_HINT = re.compile(r"response_format|json_schema|structured output", re.IGNORECASE)
EXCERPT_CHARS = 300
# What the client fills into a prompt: context-frame count, HUD lines, object lines.
PROMPT_FIELDS = frozenset({"n_context", "hud", "objects"})
ProgressFn = Callable[[int, int | None, LabelResult], None]


@dataclass
class ClientStats:
    """Counters over the client's life. ok/failed count answered requests; cache hits are apart."""

    requests_sent: int = 0  # HTTP requests, retries included
    cache_hits: int = 0
    retries: int = 0  # resends after transient failures
    invalid_answers: int = 0
    ok: int = 0
    failed: int = 0
    structured_fallbacks: int = 0  # 1 once "auto" gave up on response_format


@dataclass(frozen=True)
class _Prepared:
    """A request made ready to send: its messages (images inlined) and its cache key."""

    messages: list[dict[str, Any]]
    key: str
    track_ids: frozenset[int]


@dataclass
class _Attempts:
    """What one `label` call has spent so far."""

    sent: int = 0
    transient: int = 0
    invalid: int = 0
    usage: Usage = Usage()
    last_content: str | None = None
    followup: list[dict[str, Any]] = field(default_factory=list)


class _StructuredRejected(Exception):
    """Internal: the server refused response_format and "auto" turned it off; resend at once."""


class VLMClient:
    """Labels `LabelRequest`s through one chat-completions endpoint; `label` is safe to call from threads."""

    def __init__(
        self,
        config: ClientConfig,
        cache: AnswerCache | None = None,
        prompt: Prompt | None = None,
        *,
        modes: Iterable[str] = MODES,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        self.config = config
        self.cache = cache
        self.prompt = prompt or load_prompt("mode", 1)
        unfilled = sorted(self.prompt.fields - PROMPT_FIELDS)
        if unfilled:
            raise PromptError(
                f"prompt {self.prompt.version_id} uses field(s) {unfilled}; "
                f"the client fills only {sorted(PROMPT_FIELDS)}"
            )
        self._modes = tuple(modes)
        self._sleep = sleep  # injectable so tests can observe back-off without waiting
        self._rng = rng or random.Random()
        self._response_format = response_format(self._modes)
        self._transport = Transport(config.base_url, os.environ.get(config.api_key_env), config.timeout_s)
        self._structured = config.structured_output != "off"
        self._prose_streak = 0  # answers in a row in prose while response_format was sent
        self._lock = threading.Lock()
        self._stats = ClientStats()
        key_state = (
            f"from ${config.api_key_env}"
            if self._transport.has_api_key
            else f"none (${config.api_key_env} unset)"
        )
        logger.info(
            "VLM client: POST %s, model %s, prompt %s, structured output %s, API key %s",
            self._transport.url,
            config.model,
            self.prompt.version_id,
            config.structured_output,
            key_state,
        )

    def __repr__(self) -> str:
        return (
            f"VLMClient(url={self._transport.url!r}, model={self.config.model!r}, "
            f"prompt={self.prompt.version_id!r}, api_key={'set' if self._transport.has_api_key else 'unset'})"
        )

    @property
    def url(self) -> str:
        return self._transport.url

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the counters."""
        with self._lock:
            return replace(self._stats)

    @property
    def structured_output_active(self) -> bool:
        """Whether requests still carry response_format (False after "auto" fell back)."""
        return self._structured

    def label(self, request: LabelRequest) -> LabelResult:
        """Label one key frame: from the cache if this exact question was answered before, else ask."""
        start = time.monotonic()
        prepared = self._prepare(request)
        if self.cache is not None:
            hit = self.cache.get(prepared.key)
            if hit is not None:
                self._count("cache_hits")
                return replace(
                    hit,
                    request_id=request.request_id,
                    cached=True,
                    attempts=0,
                    usage=Usage(),
                    latency_s=time.monotonic() - start,
                )
        result = self._ask(request, prepared, start)
        self._count("ok" if result.ok else "failed")
        if self.cache is not None:
            self.cache.put(prepared.key, result)
        return result

    def label_many(
        self, requests: Iterable[LabelRequest], progress: ProgressFn | None = None
    ) -> list[LabelResult]:
        """Label many requests, at most `max_concurrency` at once; results come back in request order.

        `requests` may be a lazy iterable (frames decoded on demand): only 2 x max_concurrency requests are
        held at a time. `progress(done, total, result)` is called from this thread after each result (total is
        None for an iterable without a length).

        An abort error (`ABORT_STATUSES`), or any exception raised by `progress` (the way for a caller
        to add its own stop rule, e.g. "too many failures in a row"), cancels the requests not yet started,
        lets the running ones finish (their answers are cached) and is raised.
        """
        total = len(requests) if isinstance(requests, Sized) else None
        source = enumerate(requests)
        results: dict[int, LabelResult] = {}
        window = 2 * self.config.max_concurrency
        with ThreadPoolExecutor(self.config.max_concurrency, thread_name_prefix="vlm-label") as pool:
            pending: dict[Future[LabelResult], int] = {}
            try:
                while True:
                    while len(pending) < window and (item := next(source, None)) is not None:
                        pending[pool.submit(self.label, item[1])] = item[0]
                    if not pending:
                        break
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = pending.pop(future)
                        results[index] = future.result()
                        if progress is not None:
                            progress(len(results), total, results[index])
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        return [results[i] for i in range(len(results))]

    # -- one request -------------------------------------------------------------------------------------

    def _prepare(self, request: LabelRequest) -> _Prepared:
        cfg = self.config
        frames = [*request.context_frames, request.key_frame]
        images = [encode_image(f, cfg.image_format, cfg.jpeg_quality, cfg.max_image_side) for f in frames]
        hud_text = request.hud_text()
        objects_text = request.objects_text(images[-1].scale)
        rendered = self.prompt.render(
            n_context=len(request.context_frames), hud=hud_text, objects=objects_text
        )
        key = cache_key(
            model=cfg.model,
            prompt_version=self.prompt.version_id,
            image_sha256s=[im.sha256 for im in images],
            hud_text=hud_text,
            objects_text=objects_text,
            track_ids=request.track_ids,
            modes=self._modes,
        )
        return _Prepared(messages=_messages(rendered, images), key=key, track_ids=request.track_ids)

    def _ask(self, request: LabelRequest, prepared: _Prepared, start: float) -> LabelResult:
        spent = _Attempts()
        fail = partial(self._result, request, prepared, spent, start)
        while True:
            try:
                answer = self._attempt(prepared, spent)
            except _StructuredRejected:
                continue  # resend at once, now without response_format
            except (VLMHTTPError, VLMTimeout, VLMConnectionError) as err:
                if isinstance(err, VLMHTTPError) and not _is_transient(err.status):
                    if isinstance(err, StructuredOutputUnsupported) or err.status in ABORT_STATUSES:
                        raise
                    return fail(reason=str(err))
                if not self._may_retry(request, spent, err):
                    return fail(reason=f"gave up after {spent.sent} attempts; last error: {err}")
            except InvalidAnswer as err:
                if not self._may_ask_again(request, spent, err):
                    return fail(reason=f"invalid answer ({spent.invalid} tries): {err.reason}")
            else:
                return self._result(request, prepared, spent, start, answer=answer)

    def _attempt(self, prepared: _Prepared, spent: _Attempts) -> Answer:
        structured = self._structured
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": prepared.messages + spent.followup,
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
            "stream": False,
        }
        if structured:
            body["response_format"] = self._response_format
        spent.sent += 1
        spent.last_content = None
        self._count("requests_sent")
        try:
            reply = self._transport.post_chat(body)
        except VLMHTTPError as err:
            self._check_format_rejection(err, structured)
            raise
        spent.usage += reply.usage
        spent.last_content = reply.content
        return self._answer(reply, prepared.track_ids, structured)

    def _answer(self, reply: ChatReply, track_ids: frozenset[int], structured: bool) -> Answer:
        try:
            return parse_answer(self._decode(reply.content, structured), track_ids, modes=self._modes)
        except InvalidAnswer as err:
            if reply.finish_reason == "length":
                raise InvalidAnswer(
                    f"{err.reason} (the answer was cut off at max_tokens={self.config.max_tokens})"
                ) from None
            raise

    def _decode(self, content: str, structured: bool) -> dict[str, Any]:
        """The answer object: bare JSON, else the one object found in prose (then "auto" stops asking
        for structured output, which this server evidently ignores)."""
        try:
            data = load_json_object(content)
        except InvalidAnswer as strict_error:
            try:
                data = extract_json_object(content)
            except InvalidAnswer as lenient_error:
                # Text that starts like JSON gets the decoder's precise complaint; prose gets the extractor's.
                raise (strict_error if content.lstrip().startswith("{") else lenient_error) from None
            if structured:
                self._structured_ignored()
            return data
        if structured:
            with self._lock:
                self._prose_streak = 0  # the server does honour response_format (a prose answer was a fluke)
        return data

    # -- structured output fallback ------------------------------------------------------------------------

    def _check_format_rejection(self, err: VLMHTTPError, structured: bool) -> None:
        if (
            not structured
            or err.status not in _FORMAT_REJECTION_STATUSES
            or not _RESPONSE_FORMAT_HINT.search(err.body_excerpt)
        ):
            return
        if self.config.structured_output == "json_schema":
            raise StructuredOutputUnsupported(err.status, err.url, err.body_excerpt) from None
        self._disable_structured(
            f"the server rejected response_format (HTTP {err.status}: {err.body_excerpt})"
        )
        raise _StructuredRejected from None

    def _structured_ignored(self) -> None:
        if self.config.structured_output == "auto":
            with self._lock:
                self._prose_streak += 1
                streak = self._prose_streak
            if streak >= self.config.prose_limit:
                self._disable_structured(f"{streak} answers in a row came as prose despite response_format")
            else:
                logger.info("an answer came as prose despite response_format (%d in a row)", streak)
        else:
            with self._lock:
                first = self._stats.structured_fallbacks == 0
                self._stats.structured_fallbacks += 1
            if first:
                logger.warning(
                    "the server answered in prose despite response_format json_schema; answers are "
                    "extracted from the text (structured_output='json_schema' keeps asking for it)"
                )

    def _disable_structured(self, why: str) -> None:
        with self._lock:
            if not self._structured:
                return
            self._structured = False
            self._stats.structured_fallbacks += 1
        logger.warning(
            "structured output off for the rest of this run: %s; answers are now read from plain text", why
        )

    # -- retries and results ---------------------------------------------------------------------------------

    def _may_retry(self, request: LabelRequest, spent: _Attempts, err: Exception) -> bool:
        """Wait before the next transient retry; False when the retry budget is spent."""
        if spent.transient >= self.config.max_retries:
            return False
        spent.transient += 1
        delay = self._delay(spent.transient, err)
        logger.info(
            "%s: %s; retry %d/%d in %.2f s",
            request.request_id or "request",
            err,
            spent.transient,
            self.config.max_retries,
            delay,
        )
        self._count("retries")
        self._sleep(delay)
        return True

    def _may_ask_again(self, request: LabelRequest, spent: _Attempts, err: InvalidAnswer) -> bool:
        """Set up the corrective follow-up; False when the re-ask budget is spent."""
        self._count("invalid_answers")
        spent.invalid += 1
        if spent.invalid > self.config.max_invalid_retries:
            return False
        logger.info(
            "%s: invalid answer, asking again: %s",
            request.request_id or "request",
            self._transport.redact(err.reason),
        )
        spent.followup = _correction(spent.last_content, err.reason)
        return True

    def _delay(self, retry: int, err: Exception) -> float:
        cfg = self.config
        if isinstance(err, VLMHTTPError) and err.retry_after_s is not None:
            return min(err.retry_after_s, cfg.retry_after_max_s)
        return self._rng.uniform(0.0, min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (retry - 1)))

    def _result(
        self,
        request: LabelRequest,
        prepared: _Prepared,
        spent: _Attempts,
        start: float,
        answer: Answer | None = None,
        reason: str | None = None,
    ) -> LabelResult:
        if reason is not None:
            reason = self._transport.redact(reason)
            logger.warning("%s: failed: %s", request.request_id or "request", reason)
        excerpt = self._transport.redact(spent.last_content or "")[:EXCERPT_CHARS]
        return LabelResult(
            request_id=request.request_id,
            status="ok" if answer is not None else "failed",
            answer=answer,
            failure_reason=reason,
            attempts=spent.sent,
            latency_s=time.monotonic() - start,
            usage=spent.usage,
            raw_excerpt=excerpt,
            cache_key=prepared.key,
            model=self.config.model,
            prompt_version=self.prompt.version_id,
        )

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self._stats, name, getattr(self._stats, name) + 1)


def _is_transient(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500


def _messages(rendered: RenderedPrompt, images: list[EncodedImage]) -> list[dict[str, Any]]:
    """System text, then one user message: the rendered text, then each frame after its name."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": rendered.user}]
    n_context = len(images) - 1
    for i, image in enumerate(images):
        name = "Key frame:" if i == n_context else f"Context frame {i + 1} of {n_context}:"
        parts.append({"type": "text", "text": name})
        parts.append({"type": "image_url", "image_url": {"url": image.data_url()}})
    return [{"role": "system", "content": rendered.system}, {"role": "user", "content": parts}]


def _correction(rejected: str | None, reason: str) -> list[dict[str, Any]]:
    """Messages appended when asking again: the rejected answer and why it was rejected."""
    messages: list[dict[str, Any]] = []
    if rejected:
        messages.append({"role": "assistant", "content": rejected[:2000]})
    messages.append(
        {
            "role": "user",
            "content": f"That answer was rejected: {reason}. Reply again with only the "
            "JSON object, in the form given in the instructions.",
        }
    )
    return messages
