"""Input events of a person playing (bot/recordings/input_events.py): their text form, key names, and the
buffer."""

from __future__ import annotations

from types import SimpleNamespace

from bot.recordings.input_events import EventBuffer, InputEvent, format_event, key_name, parse_event

REGION = (100, 50, 320, 180)  # left, top, width, height: events are screen px


def test_event_text_round_trip_and_key_names() -> None:
    event = InputEvent(12.5, "scroll", 130, 70, dx=0, dy=-1)
    assert parse_event(format_event(event, 10.0, REGION)) == {
        "t": 2.5, "kind": "scroll", "dx": 0, "dy": -1, "x": 30, "y": 20,
    }  # fmt: skip
    assert key_name(SimpleNamespace(name="ctrl_l")) == "ctrl" and key_name(SimpleNamespace(name="f9")) == "f9"
    assert key_name(SimpleNamespace(name=None, char="B")) == "b"
    assert key_name(SimpleNamespace(name=None, char=None, vk=65027)) == "vk65027"


def test_event_buffer_sorts_and_keeps_later_events() -> None:
    buffer = EventBuffer()
    for t in (3.0, 1.0, 2.0):
        buffer.push(InputEvent(t, "move"))
    assert [e.t for e in buffer.drain(2.5)] == [1.0, 2.0]
    assert [e.t for e in buffer.drain(10.0)] == [3.0]
