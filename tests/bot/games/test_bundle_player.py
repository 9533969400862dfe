"""BundlePlayer: a bundle for the wrong game is refused; the player keeps torch to its own thread budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bot.errors import PolicyError
from bot.games.bundle_player import BundlePlayer


def test_the_player_keeps_torch_to_its_threads_and_refuses_another_games_bundle(
    tmp_path: Path, untrained_detector, tiny_bundle
) -> None:
    # the game shares the cores: torch's default pool beside Naev gave 8 fps where one thread gave 27
    before = torch.get_num_threads()
    bundle = tiny_bundle(tmp_path / "bundle", untrained_detector(tmp_path / "detector", "naev"), game="naev")
    try:
        torch.set_num_threads(2)
        BundlePlayer(bundle, "naev", (1280, 720), threads=1)
        assert torch.get_num_threads() == 1
        with pytest.raises(PolicyError, match="cannot play 'arena'"):
            BundlePlayer(bundle, "arena", (1280, 720))
    finally:
        torch.set_num_threads(before)
