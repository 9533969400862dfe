"""The answer schema, `parse_answer`'s validation of every field, and the plain-text JSON extractor."""

from __future__ import annotations

import json
import math

import pytest

from vlm_labeling.errors import InvalidAnswer
from vlm_labeling.schema import (
    ANSWER_KEYS,
    MODES,
    RATIONALE_MAX_CHARS,
    Answer,
    answer_schema,
    extract_json_object,
    parse_answer,
    response_format,
)

TRACKS = {3, 7}


def good(**overrides):
    data = {"mode": "FIGHT", "confidence": 0.8, "target_id": 7, "rationale": "attacks the raider"}
    data.update(overrides)
    return data


def test_modes_match_the_arena_contract():
    from arena.spec import MODES as ARENA_MODES

    assert MODES == ARENA_MODES


def test_schema_is_strict_compatible():
    schema = answer_schema()
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == list(ANSWER_KEYS) == list(schema["properties"])
    assert schema["properties"]["mode"]["enum"] == list(MODES)
    assert schema["properties"]["target_id"]["type"] == ["integer", "null"]
    assert schema["properties"]["confidence"]["type"] == "number"
    json.dumps(schema)  # plain JSON, sendable as is


def test_response_format_wire_shape():
    fmt = response_format()
    assert fmt["type"] == "json_schema"
    assert set(fmt["json_schema"]) == {"name", "schema", "strict"}
    assert fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"] == answer_schema()


def test_parse_good_answer_from_text_and_mapping():
    expected = Answer(mode="FIGHT", confidence=0.8, target_id=7, rationale="attacks the raider")
    assert parse_answer(json.dumps(good()), TRACKS) == expected
    assert parse_answer(good(), TRACKS) == expected


def test_mode_is_case_insensitive_and_normalised():
    assert parse_answer(good(mode=" fight "), TRACKS).mode == "FIGHT"
    assert parse_answer(good(mode="Cautious", target_id=None), TRACKS).mode == "CAUTIOUS"


def test_null_target_and_integer_confidence_are_valid():
    answer = parse_answer(good(target_id=None, confidence=1), TRACKS)
    assert answer.target_id is None and answer.confidence == 1.0 and isinstance(answer.confidence, float)


def test_no_track_check_when_ids_unknown():
    assert parse_answer(good(target_id=12345), None).target_id == 12345


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"mode": "ATTACK"}, "mode 'ATTACK' is not one of"),
        ({"mode": 3}, "mode must be a string"),
        ({"confidence": 1.5}, "confidence 1.5 is outside [0, 1]"),
        ({"confidence": -0.1}, "confidence -0.1 is outside [0, 1]"),
        ({"confidence": "0.9"}, "confidence must be a number"),
        ({"confidence": True}, "confidence must be a number"),
        ({"confidence": math.nan}, "confidence must be finite"),
        ({"target_id": 42}, "target_id 42 is not among the frame's track ids [3, 7]"),
        ({"target_id": "7"}, "target_id must be an integer or null"),
        ({"target_id": 7.0}, "target_id must be an integer or null"),
        ({"target_id": True}, "target_id must be an integer or null"),
        ({"rationale": None}, "rationale must be a string"),
        ({"extra": 1}, "unexpected key(s) ['extra']"),
    ],
)
def test_invalid_fields_are_rejected_with_the_reason(overrides, reason):
    with pytest.raises(InvalidAnswer) as info:
        parse_answer(good(**overrides), TRACKS)
    assert reason in info.value.reason


def test_missing_key_is_named():
    data = good()
    del data["confidence"]
    with pytest.raises(InvalidAnswer, match=r"missing key\(s\) \['confidence'\]"):
        parse_answer(data, TRACKS)


def test_empty_track_set_allows_only_null():
    assert parse_answer(good(target_id=None), set()).target_id is None
    with pytest.raises(InvalidAnswer, match="not among"):
        parse_answer(good(target_id=3), set())


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"mode": "FIGHT", "confidence": 0.8', "not valid JSON"),
        ('["FIGHT", 0.8]', "expected a JSON object, got a JSON array"),
        ("FIGHT", "not valid JSON"),
        (
            '{"mode": "FIGHT", "confidence": NaN, "target_id": null, "rationale": ""}',
            "confidence must be finite",
        ),
    ],
)
def test_strict_text_parsing_rejects_non_objects(text, reason):
    with pytest.raises(InvalidAnswer, match=reason):
        parse_answer(text, TRACKS)


def test_strict_parsing_does_not_dig_into_prose():
    with pytest.raises(InvalidAnswer, match="not valid JSON"):
        parse_answer("Answer: " + json.dumps(good()), TRACKS)
    assert parse_answer("Answer: " + json.dumps(good()), TRACKS, lenient=True).mode == "FIGHT"


def test_long_rationale_is_cut_not_rejected():
    assert len(parse_answer(good(rationale="x" * 1000), TRACKS).rationale) == RATIONALE_MAX_CHARS


def test_answer_dict_round_trip():
    answer = parse_answer(good(), TRACKS)
    assert Answer.from_dict(answer.to_dict()) == answer


# -- extractor ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(good()),
        "Here is my answer: " + json.dumps(good()),
        json.dumps(good()) + "\nThe player clearly attacks.",
        "Sure.\n```json\n" + json.dumps(good(), indent=2) + "\n```\nHope this helps {not json}.",
        "```\n" + json.dumps(good()) + "\n```",
        "I think {this is not JSON} but the answer is " + json.dumps(good()) + " ok",
        json.dumps(good()) + "\n" + json.dumps(good()),  # the same object twice is not ambiguous
        '{"mode": "FIGHT", "confidence": 0.8, "target_id": 7, "rationale": "braces } and { in text"}',
    ],
)
def test_extractor_finds_the_one_answer(text):
    assert parse_answer(extract_json_object(text), TRACKS).mode == "FIGHT"


def test_extractor_prefers_the_object_with_a_mode():
    text = 'The HUD reads {"hp": 0.5}. Answer: ' + json.dumps(good())
    assert extract_json_object(text)["mode"] == "FIGHT"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("I believe the player is fighting.", "no complete JSON object"),
        ('Answer: {"mode": "FIGHT", "confidence": 0.8, "target_id"', "no complete JSON object"),
        (json.dumps(good()) + " or maybe " + json.dumps(good(mode="FLEE")), "2 different JSON objects"),
        ('{"a": 1} and {"b": 2}', "none has a 'mode' key"),
    ],
)
def test_extractor_refuses_garbage_and_ambiguity(text, reason):
    with pytest.raises(InvalidAnswer, match=reason):
        extract_json_object(text)


def test_single_object_without_mode_gets_the_precise_reason():
    data = extract_json_object('Result: {"label": "FIGHT"}')
    with pytest.raises(InvalidAnswer, match="missing key"):
        parse_answer(data, TRACKS)
