"""The three Tasks: models built with fitted statistics, finite losses that train, the metrics they report."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bot.perception.state import GLOB, OBJ
from bot.recordings.episode import find_episodes
from models.executor import ExecutorConfig
from models.io import save_model
from models.strategist import StrategistConfig
from models.tactician import TacticianConfig
from training.config import TrainConfig
from training.datasets import DataConfig, load_episode
from training.labels import FileLabels
from training.loop import train
from training.metrics import near_f1
from training.runs import ExecutorRun, StrategistRun, TacticianRun
from training.task import Task
from training.tasks import ExecutorTask, StrategistTask, TacticianTask, rare_weight, strategist_goals

SMALL_S = StrategistConfig(d_model=32, n_heads=2, n_layers=1, d_ff=64, goal_dim=8)
SMALL_T = TacticianConfig(d_model=32, n_heads=2, n_layers=1, d_ff=64, goal_dim=8)
SMALL_E = ExecutorConfig(d_model=16, n_layers=1, goal_dim=8, mouse_bins_x=4, mouse_bins_y=4)


def _data(perceived: Path) -> DataConfig:
    return DataConfig(data=perceived, val_fraction=0.3)


def _check_task(task: Task, keys: set[str]) -> None:
    assert isinstance(task, Task)
    model = task.build_model()
    batch = task.collate([task.train_dataset()[i] for i in range(2)])
    loss, metrics = task.loss(model, batch)
    assert loss.dim() == 0 and math.isfinite(float(loss.detach()))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    val = task.val_dataset()
    assert val is not None and len(val) > 0
    with torch.no_grad():
        result = task.evaluate(model, [task.collate([val[i] for i in range(len(val))])])
    assert keys <= set(result)
    meta = task.metadata()
    assert meta["obs_spec"]["name"] == "orbit-obs" and meta["data"]["val_episodes"]
    assert not set(meta["data"]["train_episodes"]) & set(meta["data"]["val_episodes"])


def test_strategist_task(perceived: Path) -> None:
    task = StrategistTask(StrategistRun(data=_data(perceived), model=SMALL_S, history=4, stride=2))
    _check_task(task, {"loss", "mode_acc", "mode_f1_macro", "mode_f1_fight"})
    model = task.build_model()
    summaries = np.concatenate([e.summary for e in task.episodes()[0]])
    np.testing.assert_allclose(model.norm_in.mean.numpy(), summaries.mean(0), rtol=1e-4, atol=1e-5)


def test_strategist_task_warns_when_live_reads_further_back_than_training(
    perceived: Path, caplog: pytest.LogCaptureFixture
) -> None:
    two_layers = StrategistConfig(d_model=32, n_heads=2, n_layers=2, d_ff=64, goal_dim=8, max_len=16)
    with caplog.at_level("WARNING", logger="training.tasks"):
        StrategistTask(
            StrategistRun(data=_data(perceived), model=two_layers, history=31, stride=2)
        )  # 2 x 15 + 1 = 31: fits
    assert not caplog.records
    with caplog.at_level("WARNING", logger="training.tasks"):
        StrategistTask(StrategistRun(data=_data(perceived), model=two_layers, history=30, stride=2))
    assert "reads up to 31 s back" in caplog.text and "max_len <= 15" in caplog.text


def test_tactician_task_with_strategist_goals(perceived: Path, tmp_path: Path) -> None:
    strategist = StrategistTask(StrategistRun(data=_data(perceived), model=SMALL_S)).build_model()
    save_model(tmp_path / "strategist", strategist)
    task = TacticianTask(
        TacticianRun(data=_data(perceived), model=SMALL_T, strategist=tmp_path / "strategist")
    )
    _check_task(task, {"loss", "target_acc", "approach_mse"})
    ep = task.episodes()[0][0]
    np.testing.assert_array_equal(ep.extra["goal"], strategist_goals(strategist, ep))


def test_executor_task(perceived: Path) -> None:
    task = ExecutorTask(
        ExecutorRun(data=_data(perceived), model=SMALL_E, chunk=32, click_horizon_s=0.0)
    )  # raw per-frame clicks
    _check_task(task, {"loss", "mouse_px", "click_f1", "click_f1_near", "key_acc", "key_f1_near"})
    assert task.model_cfg.n_keys == 4  # the Arena's none, attack, repair, boost
    train_clicks = np.concatenate([e.click for e in task.episodes()[0]])
    rate = train_clicks.mean()
    assert 0 < rate < 0.5
    assert task.click_pos_weight == pytest.approx(((1 - rate) / rate) ** 0.5, rel=1e-4)
    assert task.key_weight is not None and task.key_weight[0] == 1.0 and len(task.key_weight) == 4
    assert task.metadata()["click_pos_weight"] == task.click_pos_weight


def test_executor_task_grows_a_held_head_on_action_v2_episodes(perceived: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "held"
    shutil.copytree(perceived, data)
    for steps_file in data.glob("*/steps.parquet"):  # thrust (bit 1) held on every other second
        steps = pq.read_table(steps_file)
        held = ((steps.column("frame").to_numpy() // 30) % 2 * 0b10).astype(np.int32)
        pq.write_table(steps.append_column("held", pa.array(held, pa.int32())), steps_file)
    task = ExecutorTask(ExecutorRun(data=_data(data), model=SMALL_E, chunk=32))
    _check_task(task, {"loss", "held_exact", "held_f1"})
    assert task.model_cfg.n_held == task.model_cfg.n_keys == 4
    plain = ExecutorTask(ExecutorRun(data=_data(perceived), model=SMALL_E, chunk=32))
    plain.build_model()
    assert plain.model_cfg.n_held == 0  # Arena demonstrations only tap: no held head


def test_executor_targets_are_click_destinations_by_default(perceived: Path) -> None:
    raw = ExecutorTask(
        ExecutorRun(data=_data(perceived), model=SMALL_E, chunk=32, click_horizon_s=0.0)
    ).episodes()[0]
    task = ExecutorTask(ExecutorRun(data=_data(perceived), model=SMALL_E, chunk=32))
    for before, after in zip(raw, task.episodes()[0]):
        clicks = np.flatnonzero(before.click)
        assert after.click[clicks].all() and after.click.mean() > before.click.mean()  # "a click is coming"
        for c in clicks:  # the frames just before a click aim where it lands
            assert np.allclose(after.mouse[max(c - 3, 0) : c + 1], before.mouse[c])
    assert task.metadata()["click_horizon_s"] == 2.0


def test_executor_is_blind_to_the_previous_cursor(perceived: Path) -> None:
    blind = ExecutorTask(ExecutorRun(data=_data(perceived), model=SMALL_E, chunk=32)).build_model()
    seeing = ExecutorTask(
        ExecutorRun(data=_data(perceived), model=SMALL_E, chunk=32, ignore_cursor=False)
    ).build_model()
    frame = torch.rand(3, len(GLOB))
    moved = frame.clone()
    moved[:, [GLOB["cursor_x"], GLOB["cursor_y"]]] = 1.0 - moved[:, [GLOB["cursor_x"], GLOB["cursor_y"]]]
    torch.testing.assert_close(blind.norm_frame(frame), blind.norm_frame(moved), atol=1e-8, rtol=0)
    assert not torch.allclose(seeing.norm_frame(frame), seeing.norm_frame(moved))
    target = torch.rand(3, len(OBJ))
    shifted = target.clone()
    shifted[:, OBJ["dx_cursor"]] += 0.5
    torch.testing.assert_close(blind.norm_target(target), blind.norm_target(shifted), atol=1e-8, rtol=0)


def test_rare_weight_and_near_f1() -> None:
    assert rare_weight(98, 2, 1.0) == pytest.approx(49.0)
    assert rare_weight(98, 2, 0.0) == 1.0 and rare_weight(98, 0, 0.5) == 1.0
    true = np.zeros(40, bool)
    true[[10, 30]] = True
    late = np.roll(true, 2)  # both clicks two frames late
    assert near_f1(late, true, 3) == 1.0 and near_f1(late, true, 1) == 0.0
    half = np.zeros(40, bool)
    half[[10, 20]] = True  # one hit, one false alarm
    assert near_f1(half, true, 0) == pytest.approx(0.5)
    assert near_f1(np.zeros(40, bool), true, 3) == 0.0


def test_strategist_goals_are_causal(perceived: Path) -> None:
    strategist = StrategistTask(StrategistRun(data=_data(perceived), model=SMALL_S)).build_model().eval()
    ep = load_episode(find_episodes(perceived)[0], FileLabels("expert"))
    goals = strategist_goals(strategist, ep)
    ep.summary = ep.summary.copy()
    ep.summary[-1] += 5.0  # a change in the last second
    after = strategist_goals(strategist, ep)
    rows = ep.summary_end[-2] + 1  # rows up to the end of the second-to-last second never see the last one
    np.testing.assert_allclose(goals[:rows], after[:rows], atol=1e-6)


def test_strategist_learns_on_the_training_split(perceived: Path, tmp_path: Path) -> None:
    task = StrategistTask(StrategistRun(data=_data(perceived), model=SMALL_S, history=6, stride=3))
    cfg = TrainConfig(
        out_dir=tmp_path / "run", max_steps=30, batch_size=2, lr=3e-3, warmup_steps=1, ema_decay=0.0,
        eval_every=100, progress=False, tensorboard=False, best_metric="mode_acc", best_mode="max",
    )  # fmt: skip
    before = task.evaluate(task.build_model().eval(), [task.collate([task.train_dataset()[0]])])
    result = train(task, cfg)
    model = result.model.eval()
    with torch.no_grad():
        after = task.evaluate(model, [task.collate([task.train_dataset()[i] for i in range(2)])])
    assert after["loss"] < before["loss"]


def test_tactician_and_executor_need_room_for_mode_goals(perceived: Path) -> None:
    with pytest.raises(ValueError, match=r"TacticianConfig\.goal_dim: expected >= 5"):
        TacticianTask(TacticianRun(data=_data(perceived), model=TacticianConfig(goal_dim=3)))
    with pytest.raises(ValueError, match=r"ExecutorConfig\.goal_dim: expected >= 5"):
        ExecutorTask(ExecutorRun(data=_data(perceived), model=ExecutorConfig(goal_dim=4)))


def test_tactician_context_follows_the_chosen_track(perceived: Path) -> None:
    from models.tactician import Tactician, TacticianOutput
    from training.datasets import F_GLOB, F_OBJ, set_teacher_context
    from training.tasks import tactician_context

    class AlwaysPicks(Tactician):  # an untrained Tactician mostly answers "none": make it pick an object
        def forward(self, *args: torch.Tensor) -> TacticianOutput:
            out = super().forward(*args)
            out.target_logits[:, 0] = -math.inf
            return out

    torch.manual_seed(0)
    tactician = AlwaysPicks(
        TacticianConfig(d_obj=F_OBJ, d_ctx=F_GLOB, goal_dim=8, d_model=32, n_heads=2, d_ff=64)
    )
    ep = load_episode(find_episodes(perceived)[0], FileLabels("expert"))
    set_teacher_context(ep, 8)
    tactician_context(tactician, ep, hz=10.0)
    target = ep.extra["target"]
    assert target.shape == (len(ep.glob), F_OBJ) and ep.extra["approach"].shape == (len(ep.glob), 2)
    step = round(ep.fps / 10.0)
    ids: dict[int, set[int]] = {}
    for r in np.flatnonzero(np.abs(target).sum(1) > 0):  # rows with a target: it is one of that row's objects
        slot = np.flatnonzero(ep.mask[r] & np.all(ep.objects[r] == target[r], axis=1))
        assert len(slot) >= 1
        ids.setdefault(r // step, set()).add(int(ep.track_id[r, slot[0]]))
    assert ids and all(len(v) == 1 for v in ids.values())  # one track per held decision
