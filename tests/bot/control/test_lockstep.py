"""The driver ticked in game time for in-process play (bot/control/lockstep.py)."""

from __future__ import annotations

import pytest


def test_lockstep_hand_moves_along_a_path_clicks_on_arrival_and_filters_key_repeats() -> None:
    from bot.control.lockstep import LockstepHand

    hand = LockstepHand((640, 360), 30.0, ["", "space", "1", "2"], hud_panels=[(0.0, 0.0, 0.2, 0.2)], seed=0)
    actions = [hand.action((0.9, 0.8), True, 1) for _ in range(30)]  # the same decision for 1 s
    xs = [a["mouse"][0] for a in actions]
    assert 0.5 < xs[0] < 0.9 and xs[-1] == pytest.approx(0.9, abs=0.01)  # a path, not a jump
    clicked = [i for i, a in enumerate(actions) if a["click"]]
    assert clicked and all(actions[i]["mouse"] == pytest.approx([0.9, 0.8], abs=0.01) for i in clicked)
    assert sum(a["key"] == 1 for a in actions) == 1  # asked every frame, tapped once (attack toggles)
    blocked = [hand.action((0.05, 0.05), True, 0) for _ in range(30)]  # a HUD panel: never clicked
    on_panel = [a for a in blocked if a["click"] and max(a["mouse"]) <= 0.2]
    assert not on_panel and hand.driver.stats.blocked_clicks > 0
