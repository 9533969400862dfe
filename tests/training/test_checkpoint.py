"""Training checkpoints: bit-exact round trips, atomic saves, real copies, one-line errors, no pickle."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from training import checkpoint as C
from training.checkpoint import (
    TrainerState,
    capture_rng,
    copy_checkpoint,
    find_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from training.errors import CheckpointError


class Small(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.lin = nn.Linear(3, width)
        self.norm = nn.LayerNorm(width)
        self.register_buffer("mean", torch.zeros(3))


def trained(width: int = 4) -> tuple[Small, Small, torch.optim.AdamW]:
    """A model after two AdamW steps (so the optimizer has state), and a different 'EMA' copy."""
    torch.manual_seed(0)
    model = Small(width)
    optimizer = torch.optim.AdamW(
        [{"params": list(model.parameters()), "param_names": [n for n, _ in model.named_parameters()]}],
        lr=0.1,
    )
    for _ in range(2):
        optimizer.zero_grad()
        model.norm(model.lin(torch.randn(5, 3))).pow(2).mean().backward()
        optimizer.step()
    ema = Small(width)
    return model, ema, optimizer


def a_state(step: int = 7) -> TrainerState:
    return TrainerState(
        step=step,
        epoch=1,
        batch_index=3,
        total_steps=20,
        skipped_steps=1,
        ema_updates=6,
        best_metric=0.5,
        best_step=4,
        eval_step=4,
        last_metrics={"eval/loss": 0.5},
        rng=[capture_rng()],
    )


def save(folder: Path, step: int = 7) -> tuple[Small, Small, torch.optim.AdamW, TrainerState]:
    model, ema, optimizer = trained()
    state = a_state(step)
    save_checkpoint(folder, model, ema, optimizer, state, {"train": {"lr": 0.1}})
    return model, ema, optimizer, state


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    model, ema, optimizer, expected = save(tmp_path / "last")
    model2, ema2 = Small(), Small()
    optimizer2 = torch.optim.AdamW(
        [{"params": list(model2.parameters()), "param_names": [n for n, _ in model2.named_parameters()]}],
        lr=0.3,
    )
    state = load_checkpoint(tmp_path / "last", model2, ema2, optimizer2)
    for a, b in ((model, model2), (ema, ema2)):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key
    saved, loaded = optimizer.state_dict(), optimizer2.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]  # hyper-parameters too (lr 0.1, not 0.3)
    for index, slots in saved["state"].items():
        for slot, value in slots.items():
            assert torch.equal(value, loaded["state"][index][slot]), (index, slot)
    for name in (
        "step",
        "epoch",
        "batch_index",
        "total_steps",
        "skipped_steps",
        "ema_updates",
        "best_metric",
    ):
        assert getattr(state, name) == getattr(expected, name), name
    assert state.last_metrics == {"eval/loss": 0.5}
    assert torch.equal(state.rng[0].torch_cpu, expected.rng[0].torch_cpu)


def test_rng_states_round_trip_through_the_files(tmp_path: Path) -> None:
    model, ema, optimizer = trained()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint(tmp_path / "c", model, ema, optimizer, TrainerState(rng=[capture_rng()]), {})
    draws = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    restore_rng(load_checkpoint(tmp_path / "c", Small()).rng[0])
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert draws[:2] == again[:2] and torch.equal(draws[2], again[2])


def test_layout_is_safetensors_and_json_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pickle(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.save must never be used for checkpoints")

    monkeypatch.setattr(torch, "save", no_pickle)
    save(tmp_path / "last")
    names = sorted(p.name for p in (tmp_path / "last").iterdir())
    tensors = ["model.safetensors", "optimizer.safetensors", "raw.safetensors", "rng.safetensors"]
    assert names == sorted(["config.json", "trainer_state.json", *tensors])
    config = json.loads((tmp_path / "last" / "config.json").read_text())
    assert (
        config["format"] == "orbit-pilot-model"
        and config["class"] == "Small"
        and config["train"] == {"lr": 0.1}
    )


def test_model_safetensors_holds_the_ema_weights(tmp_path: Path) -> None:
    model, ema, *_ = save(tmp_path / "last")
    weights = C.read_tensors(tmp_path / "last" / "model.safetensors")
    assert torch.equal(weights["lin.weight"], ema.lin.weight) and not torch.equal(
        weights["lin.weight"], model.lin.weight
    )


def test_a_failed_save_leaves_the_previous_checkpoint_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(tmp_path / "last", step=7)
    real = C.save_file
    calls = []

    def dies_on_the_optimizer(tensors: dict, path: str, metadata: dict | None = None) -> None:
        calls.append(path)
        if path.endswith("optimizer.safetensors"):
            raise KeyboardInterrupt  # as if Ctrl+C (or a kill) hit mid-save
        real(tensors, path, metadata=metadata)

    monkeypatch.setattr(C, "save_file", dies_on_the_optimizer)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path / "last", step=8)
    assert calls and all(".last.tmp" in c for c in calls)  # nothing was written into last/ itself
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert load_checkpoint(tmp_path / "last", Small()).step == 7


def test_kill_between_the_two_renames_falls_back_to_old(tmp_path: Path) -> None:
    save(tmp_path / "last", step=7)
    (tmp_path / "last").rename(tmp_path / "last.old")  # the instant between the renames of _swap_in
    assert find_checkpoint(tmp_path) == tmp_path / "last.old"
    save(tmp_path / "last", step=9)
    assert find_checkpoint(tmp_path) == tmp_path / "last" and not (tmp_path / "last.old").exists()
    assert find_checkpoint(tmp_path / "nothing") is None


def test_copy_is_a_real_copy(tmp_path: Path) -> None:
    save(tmp_path / "last")
    copy_checkpoint(tmp_path / "last", tmp_path / "best")
    save(tmp_path / "last", step=8)  # overwriting last/ leaves best/ as it was
    assert not (tmp_path / "best").is_symlink()
    for file in (tmp_path / "best").iterdir():
        assert not file.is_symlink() and file.stat().st_nlink == 1
    assert load_checkpoint(tmp_path / "best", Small()).step == 7


def test_mismatched_model_is_one_line_naming_file_and_tensor(tmp_path: Path) -> None:
    save(tmp_path / "last")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "last", Small(width=5))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "last" / "raw.safetensors"))
    assert "tensor 'lin.weight' has shape (4, 3), the model expects (5, 3)" in message


def test_missing_and_unexpected_tensors(tmp_path: Path) -> None:
    save(tmp_path / "last")

    class Extra(Small):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 2)

    with pytest.raises(CheckpointError, match=r"raw\.safetensors: tensor 'head\.weight' missing"):
        load_checkpoint(tmp_path / "last", Extra())

    class Fewer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 4)

    with pytest.raises(CheckpointError, match=r"raw\.safetensors: unexpected tensor 'mean' \(3 in all\)"):
        load_checkpoint(tmp_path / "last", Fewer())


def test_mismatched_optimizer_names_the_parameter(tmp_path: Path) -> None:
    save(tmp_path / "last")
    model = Small()
    named = list(model.named_parameters())[::-1]  # same parameters, another order
    optimizer = torch.optim.AdamW([{"params": [p for _, p in named], "param_names": [n for n, _ in named]}])
    before = model.lin.weight.detach().clone()
    with pytest.raises(
        CheckpointError, match=r"trainer_state\.json: optimizer group 0 holds parameter 'lin\.weight'"
    ):
        load_checkpoint(tmp_path / "last", model, optimizer=optimizer)
    assert torch.equal(before, model.lin.weight)  # nothing is loaded before every check has passed


def test_unreadable_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        load_checkpoint(tmp_path / "nope", Small())
    save(tmp_path / "last")
    (tmp_path / "last" / "trainer_state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"trainer_state\.json: not valid JSON"):
        load_checkpoint(tmp_path / "last", Small())
    shutil.rmtree(tmp_path / "last")
    save(tmp_path / "last")
    (tmp_path / "last" / "raw.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"raw\.safetensors: unreadable safetensors file"):
        load_checkpoint(tmp_path / "last", Small())


def test_models_io_loads_a_checkpoint_of_a_real_model(tmp_path: Path) -> None:
    """best/ and last/ are model folders the live bot can load with models.io.load_model."""
    from models.io import load_model
    from models.strategist import Strategist, StrategistConfig

    config = StrategistConfig(d_in=4, d_model=16, n_heads=2, n_layers=1, d_ff=32, goal_dim=8)
    model, ema = Strategist(config), Strategist(config)
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(
        tmp_path / "best", model, ema, optimizer, TrainerState(rng=[capture_rng()]), {"train": {}}
    )
    loaded = load_model(tmp_path / "best", expected_class="Strategist")
    for key, value in ema.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
