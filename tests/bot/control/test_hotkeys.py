"""The start / pause / kill hotkeys (bot/control/hotkeys.py): one call per press, the bot's own keys ignored.
The real listener under Xvfb is tested with the driver (test_driver.py)."""

from __future__ import annotations

from bot.control.hotkeys import HotkeyConfig, Hotkeys, key_name


def test_hotkeys_dispatch_once_per_press_and_ignore_the_bots_own_keys() -> None:
    calls: list[str] = []
    ours = {"f10"}
    hotkeys = Hotkeys(
        HotkeyConfig(),
        on_start=lambda: calls.append("start"),
        on_pause=lambda: calls.append("pause"),
        on_kill=lambda: calls.append("kill"),
        ignore=lambda name: name in ours,
    )
    for name in ["f9", "f9", "a", "f10", "f12"]:  # f9 auto-repeats before its release
        hotkeys.handle_press(name)
    hotkeys.handle_release("f9")
    hotkeys.handle_press("f9")
    assert calls == ["start", "kill", "start"]
    assert key_name(type("K", (), {"name": "f12"})()) == "f12"
    assert key_name(type("C", (), {"char": "A"})()) == "a"
