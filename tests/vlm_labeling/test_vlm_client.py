"""The VLM client against a real HTTP server on 127.0.0.1 (`vlm_labeling.fake_server`).

Back-off delays are tiny (or recorded instead of slept), so the module runs in seconds; the only time bounds
are generous per-test timeouts that catch a hang.
"""

from __future__ import annotations

import base64
import json
import logging
import threading

import cv2
import numpy as np
import pytest

from vlm_labeling.errors import ConfigError, StructuredOutputUnsupported, VLMHTTPError
from vlm_labeling.fake_server import (
    FakeVLMServer,
    RecordedRequest,
    Reply,
    answer_json,
    answer_reply,
    content_reply,
    error_reply,
)
from vlm_labeling.records import LabelRequest, TrackedObject
from vlm_labeling.schema import answer_schema

pytestmark = pytest.mark.timeout(60)

SECRET = "sk-test-0123456789abcdefSECRET"


def user_parts(body: dict) -> list[dict]:
    return body["messages"][1]["content"]


def image_urls(body: dict) -> list[str]:
    return [p["image_url"]["url"] for p in user_parts(body) if p["type"] == "image_url"]


def decode_data_url(url: str) -> tuple[str, bytes]:
    head, data = url.split(",", 1)
    assert head.startswith("data:") and head.endswith(";base64")
    return head[5:-7], base64.b64decode(data, validate=True)


# -- good answers ------------------------------------------------------------------------------------------


def test_structured_answer(server, make_client, make_request):
    server.enqueue(answer_reply(mode="FIGHT", confidence=0.9, target_id=7, rationale="fires at 7"))
    client = make_client(server)
    result = client.label(make_request(0))

    assert result.ok and result.status == "ok" and result.failure_reason is None
    assert (result.answer.mode, result.answer.confidence, result.answer.target_id) == ("FIGHT", 0.9, 7)
    assert result.attempts == 1 and not result.cached
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (1200, 30)
    assert result.request_id == "episode_0/frame_0000" and result.model == "fake-vlm"
    assert result.prompt_version == client.prompt.version_id and '"FIGHT"' in result.raw_excerpt

    (request,) = server.requests
    assert request.path == "/v1/chat/completions"
    assert "Authorization" not in request.headers  # no key set
    body = request.body
    assert body["model"] == "fake-vlm" and body["stream"] is False
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"] == answer_schema() and fmt["json_schema"]["name"]
    assert body["messages"][0]["role"] == "system" and body["messages"][1]["role"] == "user"
    text = user_parts(body)[0]["text"]
    assert "hp_frac: 0.75" in text and "id=7 class=npc_scout" in text and "id=9" in text


def test_answer_wrapped_in_prose(server, make_client, make_request):
    wrapped = "Looking at the frames:\n```json\n" + answer_json(mode="loot", target_id=9) + "\n```\nDone."
    server.enqueue(content_reply(wrapped))
    result = make_client(server, structured_output="off").label(make_request(0))
    assert result.ok and result.answer.mode == "LOOT" and result.answer.target_id == 9
    assert "response_format" not in server.requests[0].body


def test_invalid_json_is_asked_again_with_the_reason(server, make_client, make_request):
    server.enqueue(content_reply('{"mode": "FIGHT", "confidence": 0.8,,}'), answer_reply(mode="FLEE"))
    client = make_client(server)
    result = client.label(make_request(0))
    assert result.ok and result.answer.mode == "FLEE" and result.attempts == 2
    retry = server.requests[1].body["messages"]
    assert retry[2] == {"role": "assistant", "content": '{"mode": "FIGHT", "confidence": 0.8,,}'}
    assert retry[3]["role"] == "user" and "not valid JSON" in retry[3]["content"]
    assert client.stats.invalid_answers == 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"mode": "BERSERK"}, "mode 'BERSERK' is not one of"),
        ({"target_id": 42}, "target_id 42 is not among the frame's track ids [7, 9]"),
        ({"confidence": 1.7}, "confidence 1.7 is outside [0, 1]"),
        ({"confidence": -0.2}, "confidence -0.2 is outside [0, 1]"),
    ],
)
def test_persistently_invalid_answers_fail_with_the_reason(server, make_client, make_request, fields, reason):
    server.policy = lambda request: answer_reply(**fields)
    client = make_client(server, max_invalid_retries=2)
    result = client.label(make_request(0))
    assert result.status == "failed" and result.answer is None
    assert reason in result.failure_reason and "invalid answer (3 tries)" in result.failure_reason
    assert result.attempts == 3 and len(server.requests) == 3
    assert client.cache is not None and len(client.cache) == 0  # a failure is never cached


def test_an_invalid_answer_then_a_valid_one(server, make_client, make_request):
    server.enqueue(error_reply(502), answer_reply(target_id=42), answer_reply(mode="LOOT", target_id=9))
    result = make_client(server).label(make_request(0))
    assert result.ok and result.answer.target_id == 9 and result.attempts == 3
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (2400, 60)  # summed over replies


def test_a_reply_that_is_not_a_chat_completion(server, make_client, make_request):
    server.enqueue(Reply(body="<html>gateway</html>"), answer_reply())
    result = make_client(server).label(make_request(0))
    assert result.ok and result.attempts == 2


# -- transient failures ------------------------------------------------------------------------------------


def test_http_500_then_success(server, make_client, make_request, sleeps):
    server.enqueue(error_reply(500, "boom"), answer_reply(mode="EXPLORE"))
    client = make_client(server)
    result = client.label(make_request(0))
    assert result.ok and result.attempts == 2
    assert client.stats.retries == 1 and len(sleeps) == 1 and 0.0 <= sleeps[0] <= 0.001


def test_a_dropped_connection_then_success(server, make_client, make_request):
    server.enqueue(Reply(drop=True), answer_reply(mode="LOOT", target_id=7))
    result = make_client(server).label(make_request(0))
    assert result.ok and result.answer.mode == "LOOT" and result.attempts == 2


def test_429_retry_after_is_honoured_and_capped(server, make_client, make_request, sleeps):
    server.enqueue(
        error_reply(429, "slow down", headers={"Retry-After": "3"}),
        error_reply(429, "slow down", headers={"Retry-After": "999"}),
        answer_reply(),
    )
    result = make_client(server, retry_after_max_s=5.0).label(make_request(0))
    assert result.ok and result.attempts == 3
    assert sleeps == [3.0, 5.0]


def test_backoff_grows_with_full_jitter(server, make_client, make_request, sleeps):
    server.policy = lambda request: error_reply(503)
    make_client(server, max_retries=4, backoff_base_s=1.0, backoff_max_s=3.0).label(make_request(0))
    caps = [1.0, 2.0, 3.0, 3.0]
    assert len(sleeps) == 4 and all(0.0 <= s <= cap for s, cap in zip(sleeps, caps))


def test_hang_past_the_timeout_then_success(server, make_client, make_request):
    server.enqueue(Reply(body=None, delay_s=30.0), answer_reply(mode="CAUTIOUS"))
    client = make_client(server, timeout_s=0.3)
    result = client.label(make_request(0))
    assert result.ok and result.answer.mode == "CAUTIOUS" and result.attempts == 2


def test_repeated_failures_give_a_failed_result(server, make_client, make_request):
    server.policy = lambda request: error_reply(503, "overloaded")
    client = make_client(server, max_retries=3)
    result = client.label(make_request(0))
    assert result.status == "failed" and result.answer is None
    assert result.attempts == 4 and len(server.requests) == 4
    assert "gave up after 4 attempts" in result.failure_reason
    assert (
        "HTTP 503" in result.failure_reason and server.base_url + "/chat/completions" in result.failure_reason
    )
    assert "\n" not in result.failure_reason
    assert len(client.cache) == 0 and client.stats.failed == 1


def test_other_4xx_fail_at_once(server, make_client, make_request):
    server.enqueue(error_reply(413, "image too large"))
    result = make_client(server).label(make_request(0))
    assert result.status == "failed" and result.attempts == 1
    assert result.failure_reason.startswith(f"HTTP 413 from POST {server.base_url}/chat/completions")


@pytest.mark.parametrize("status", [401, 404])
def test_misconfiguration_stops_the_run(server, make_client, make_request, status):
    server.policy = lambda request: error_reply(status, "model 'fake-vlm' not found")
    client = make_client(server)
    with pytest.raises(VLMHTTPError) as info:
        client.label_many([make_request(i) for i in range(6)])
    assert info.value.status == status and "\n" not in str(info.value)
    assert str(info.value).startswith(f"HTTP {status} from POST {server.base_url}/chat/completions")
    assert len(server.requests) <= 2 * client.config.max_concurrency  # queued requests were not sent


# -- structured output fallback ----------------------------------------------------------------------------


def rejects_response_format(request: RecordedRequest) -> Reply:
    if "response_format" in request.body:
        return error_reply(
            400, "Invalid parameter: 'response_format' of type 'json_schema' is not supported."
        )
    return content_reply("My answer: " + answer_json(mode="EXPLORE") + " (based on the HUD)")


def test_server_rejecting_response_format_falls_back_to_text(server, make_client, make_request, caplog):
    server.policy = rejects_response_format
    client = make_client(server, max_concurrency=1)
    with caplog.at_level(logging.WARNING, logger="vlm_labeling"):
        results = client.label_many([make_request(i) for i in range(3)])
    assert all(r.ok and r.answer.mode == "EXPLORE" for r in results)
    with_format = [r for r in server.requests if "response_format" in r.body]
    assert len(with_format) == 1 and len(server.requests) == 4  # rejected once, then never sent again
    assert results[0].attempts == 2 and results[1].attempts == 1
    assert not client.structured_output_active and client.stats.structured_fallbacks == 1
    assert caplog.text.count("structured output off") == 1


def test_server_ignoring_response_format_falls_back_to_text(server, make_client, make_request, caplog):
    server.policy = lambda request: content_reply("Sure! " + answer_json(mode="FLEE") + " Stay safe.")
    client = make_client(server, max_concurrency=1, prose_limit=3)
    with caplog.at_level(logging.WARNING, logger="vlm_labeling"):
        results = client.label_many([make_request(i) for i in range(5)])
    assert [r.answer.mode for r in results] == ["FLEE"] * 5
    assert ["response_format" in r.body for r in server.requests] == [True, True, True, False, False]
    assert "3 answers in a row came as prose despite response_format" in caplog.text


def test_one_prose_answer_among_json_ones_keeps_structured_output(server, make_client, make_request):
    prose = content_reply("Here: " + answer_json(mode="LOOT") + " ok")
    for _ in range(3):  # prose, prose, JSON: the streak restarts, never reaching 3
        server.enqueue(prose, prose, answer_reply(mode="FIGHT"))
    client = make_client(server, max_concurrency=1, cache=False, prose_limit=3)
    results = client.label_many([make_request(i) for i in range(9)])
    assert all(r.ok for r in results) and client.structured_output_active
    assert all("response_format" in r.body for r in server.requests)
    assert client.stats.structured_fallbacks == 0


def test_forced_json_schema_on_a_server_without_it_is_an_error(server, make_client, make_request):
    server.policy = rejects_response_format
    with pytest.raises(StructuredOutputUnsupported, match="structured_output"):
        make_client(server, structured_output="json_schema").label(make_request(0))


def test_a_400_about_something_else_does_not_disable_structured_output(server, make_client, make_request):
    server.enqueue(error_reply(400, "context length exceeded"))
    client = make_client(server)
    assert client.label(make_request(0)).status == "failed"
    assert client.structured_output_active


# -- cache and resume --------------------------------------------------------------------------------------


def test_a_rerun_costs_nothing(server, make_client, make_request):
    client = make_client(server)
    first = client.label(make_request(0))
    again = client.label(make_request(0))
    assert len(server.requests) == 1
    assert again.cached and again.attempts == 0 and again.answer == first.answer
    assert again.usage.prompt_tokens is None and client.stats.cache_hits == 1


def test_dead_server_then_rerun_resumes_from_the_cache(make_client, make_request):
    requests = [make_request(i) for i in range(6)]
    first = FakeVLMServer().start()
    first.enqueue(
        answer_reply(mode="FIGHT", target_id=7),
        answer_reply(mode="LOOT", target_id=9),
        answer_reply(mode="FLEE"),
        Reply(die=True),
    )
    try:
        results = make_client(first, max_concurrency=1, max_retries=2).label_many(requests)
    finally:
        first.stop()
    assert [r.status for r in results] == ["ok"] * 3 + ["failed"] * 3
    assert all("gave up" in r.failure_reason for r in results[3:])

    with FakeVLMServer() as second:
        second.policy = lambda request: answer_reply(mode="EXPLORE")
        client = make_client(second, max_concurrency=3)
        rerun = client.label_many(requests)
    assert [r.answer.mode for r in rerun] == ["FIGHT", "LOOT", "FLEE", "EXPLORE", "EXPLORE", "EXPLORE"]
    assert [r.cached for r in rerun] == [True] * 3 + [False] * 3
    assert len(second.requests) == 3 and client.stats.cache_hits == 3
    answered_first = {image_urls(r.body)[-1] for r in first.requests[:3]}
    asked_second = {image_urls(r.body)[-1] for r in second.requests}
    assert not answered_first & asked_second  # nothing answered before was asked again


# -- concurrency -------------------------------------------------------------------------------------------


def test_concurrency_is_bounded(server, make_client, make_request):
    server.gate = 3  # hold requests until 3 are in flight at once, to show the client reaches its bound
    client = make_client(server, max_concurrency=3, cache=False)
    progress: list[tuple[int, int | None]] = []
    results = client.label_many(
        [make_request(i) for i in range(12)],
        progress=lambda done, total, result: progress.append((done, total)),
    )
    assert server.max_in_flight == 3 and len(server.requests) == 12
    assert [r.request_id for r in results] == [f"episode_0/frame_{i:04d}" for i in range(12)]
    assert progress == [(i, 12) for i in range(1, 13)]


def test_label_many_accepts_a_lazy_iterable(server, make_client, make_request):
    made: list[int] = []

    def generate():
        for i in range(7):
            made.append(i)
            yield make_request(i)

    progress: list[int | None] = []
    results = make_client(server).label_many(generate(), progress=lambda d, total, r: progress.append(total))
    assert len(results) == 7 and made == list(range(7)) and progress == [None] * 7


def test_label_is_thread_safe_for_the_fallback_switch(server, make_client, make_request):
    server.policy = rejects_response_format
    client = make_client(server, max_concurrency=4, cache=False)
    results = client.label_many([make_request(i) for i in range(8)])
    assert all(r.ok for r in results) and client.stats.structured_fallbacks == 1


# -- secrets -----------------------------------------------------------------------------------------------


def test_api_key_is_sent_but_never_leaked(server, make_client, make_request, monkeypatch, caplog, cache_dir):
    monkeypatch.setenv("ORBIT_VLM_API_KEY", SECRET)

    def echo_headers(request: RecordedRequest) -> Reply:  # a hostile proxy that echoes what it got
        return error_reply(400, f"bad request; headers were {request.headers}")

    with caplog.at_level(logging.DEBUG, logger="vlm_labeling"):
        client = make_client(server)
        server.enqueue(error_reply(500), answer_reply())
        ok = client.label(make_request(0))
        server.enqueue(content_reply(f"nonsense {SECRET}"), content_reply("x"), content_reply("y"))
        invalid = client.label(make_request(1))
        server.enqueue(Reply(status=200, body=f"not json {SECRET}"), answer_reply())
        client.label(make_request(2))
        server.policy = echo_headers
        echoed = client.label(make_request(3))
        server.policy = lambda request: error_reply(401, f"invalid key {SECRET}")
        with pytest.raises(VLMHTTPError) as unauthorized:
            client.label(make_request(4))

    assert all(r.headers.get("Authorization") == f"Bearer {SECRET}" for r in server.requests)
    assert ok.ok and invalid.status == "failed" and echoed.status == "failed"
    assert "[redacted]" in echoed.failure_reason and "[redacted]" in str(unauthorized.value)
    texts = [
        caplog.text,
        repr(client),
        repr(client.config),
        repr(client._transport),
        str(client.config.to_dict()),
        repr(ok),
        repr(invalid),
        repr(echoed),
        str(unauthorized.value),
        repr(unauthorized.value),
    ]
    texts += [p.read_text() for p in cache_dir.rglob("*.json")]
    assert len(texts) > 10  # the cache holds entries
    for text in texts:
        assert SECRET not in text
    assert "api_key=set" in repr(client)


def test_a_key_pasted_into_api_key_env_is_not_echoed(server, make_client):
    with pytest.raises(ConfigError) as info:
        make_client(server, api_key_env=SECRET + "-with-dashes")
    assert SECRET not in str(info.value) and "api_key_env" in str(info.value)


# -- images ------------------------------------------------------------------------------------------------


def test_images_are_sent_as_base64_data_urls(server, make_client, make_frame):
    key, older, newer = make_frame(1), make_frame(2), make_frame(3)
    request = LabelRequest(key_frame=key, context_frames=[older, newer], request_id="png")
    make_client(server, image_format="png").label(request)
    urls = image_urls(server.requests[0].body)
    assert len(urls) == 3
    for url, original in zip(urls, [older, newer, key]):  # context oldest first, key frame last
        mime, data = decode_data_url(url)
        assert mime == "image/png"
        assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), original)
    labels = [p["text"] for p in user_parts(server.requests[0].body) if p["type"] == "text"][1:]
    assert labels == ["Context frame 1 of 2:", "Context frame 2 of 2:", "Key frame:"]


def test_jpeg_by_default_and_encoded_bytes_pass_through(server, make_client, make_frame):
    smooth = cv2.GaussianBlur(make_frame(5, 64, 96), (0, 0), 3)
    ok, png = cv2.imencode(".png", make_frame(6))
    request = LabelRequest(key_frame=smooth, context_frames=[png.tobytes()])
    make_client(server).label(request)
    (context_url, key_url) = image_urls(server.requests[0].body)
    assert decode_data_url(context_url) == ("image/png", png.tobytes())
    mime, data = decode_data_url(key_url)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert mime == "image/jpeg" and decoded.shape == smooth.shape
    assert np.abs(decoded.astype(int) - smooth.astype(int)).mean() < 3.0


def test_shrunk_frames_carry_shrunk_boxes(server, make_client, make_frame):
    request = LabelRequest(
        key_frame=make_frame(7, 200, 400), objects=[TrackedObject(5, "bonus_box", (100, 40, 140, 80))]
    )
    make_client(server, max_image_side=100).label(request)
    body = server.requests[0].body
    mime, data = decode_data_url(image_urls(body)[0])
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (50, 100, 3)
    assert "id=5 class=bonus_box box=[25, 10, 35, 20]" in user_parts(body)[0]["text"]


# -- config ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("base_url", "localhost:8000"),
        ("base_url", "http://127.0.0.1:8000/v1/chat/completions"),
        ("base_url", "http://127.0.0.1:port/v1"),
        ("model", ""),
        ("timeout_s", 0),
        ("max_concurrency", 0),
        ("max_retries", -1),
        ("backoff_max_s", float("nan")),
        ("structured_output", "yes"),
        ("image_format", "webp"),
        ("jpeg_quality", 101),
        ("temperature", 3.0),
        ("max_image_side", 4),
        ("prose_limit", 0),
    ],
)
def test_config_names_the_bad_field(field, value):
    from vlm_labeling.client_config import ClientConfig

    with pytest.raises(ConfigError, match=f"^{field}: expected"):
        ClientConfig(**{field: value})


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"key_frame": "frame.png"}, "key_frame: expected a numpy image"),
        ({"context_frames": [None]}, r"context_frames\[0\]"),
        ({"objects": [{"id": 1, "cls": "npc_scout", "box": [0, 0, 1, 1]}] * 2}, "duplicate track ids"),
        ({"objects": [{"id": "a", "cls": "npc_scout", "box": [0, 0, 1, 1]}]}, "track_id: expected an int"),
        ({"objects": [{"id": 1, "cls": "npc_scout"}]}, "box: expected finite"),
        ({"objects": [{"id": 1, "cls": "npc_scout", "box": [5, 0, 1, 1]}]}, "box: expected finite"),
        ({"hud": {"hp": [1]}}, r"hud\['hp'\]"),
    ],
)
def test_bad_requests_are_refused_before_sending(make_frame, kwargs, reason):
    from vlm_labeling.errors import RequestError

    fields = {"key_frame": make_frame(0), **kwargs}
    with pytest.raises(RequestError, match=reason):
        LabelRequest(**fields)


def test_label_many_of_nothing(server, make_client):
    assert make_client(server).label_many([]) == []
    assert threading.active_count() < 50  # no thread leak from pools
    assert server.requests == []
    json.dumps(make_client(server).config.to_dict())


def test_an_exception_from_progress_stops_the_run(server, make_client, make_request):
    class Enough(Exception):
        pass

    def stop_after_two(done, total, result):
        if done == 2:
            raise Enough

    client = make_client(server, max_concurrency=1)
    with pytest.raises(Enough):
        client.label_many([make_request(i) for i in range(20)], progress=stop_after_two)
    assert len(server.requests) <= 2 + 2 * client.config.max_concurrency
    assert len(client.cache) == len(server.requests)  # every answer that came back is kept for the rerun


def test_numpy_ids_and_hud_values_are_accepted(server, make_client, make_frame):
    request = LabelRequest(
        key_frame=make_frame(8),
        hud={"hp_frac": np.float32(0.25), "credits": np.int64(5)},
        objects=[{"id": np.int64(4), "cls": "npc_boss", "box": np.array([1.0, 2.0, 3.0, 4.0])}],
    )
    server.enqueue(answer_reply(mode="FLEE", target_id=4))
    result = make_client(server).label(request)
    assert result.ok and result.answer.target_id == 4
    assert "hp_frac: 0.25\ncredits: 5" in user_parts(server.requests[0].body)[0]["text"]
