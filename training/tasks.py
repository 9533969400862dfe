"""The three training Tasks (training/task.py `Task`): Strategist, Tactician, Executor on perceived episodes.

    StrategistTask  summaries (B, T, F_SUM) -> mode per second      eval: mode_acc, mode_f1_* (best: mode_acc)
    TacticianTask   objects + goal + glob   -> target slot, approach eval: target_acc, approach_mse
    ExecutorTask    glob + goal/target/approach per frame -> mouse, click, key
                                                  eval: mouse_px, click_f1(_near), key_acc(_pressed)

Each takes its run config (training/runs.py) whole. Upstream context and rare-event weights:
docs/notes/training.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from bot.perception.state import GLOB, OBJ, OBS_SPEC
from models.executor import Executor, ExecutorConfig, held_bits
from models.io import load_model
from models.strategist import IGNORE_INDEX, MODES, Strategist, StrategistConfig
from models.tactician import Tactician, TacticianConfig
from training.datasets import (
    F_GLOB,
    F_OBJ,
    F_SUM,
    DataConfig,
    DatasetError,
    EpisodeArrays,
    ExecutorDataset,
    StrategistDataset,
    TacticianDataset,
    click_destinations,
    collate_executor,
    collate_strategist,
    final_test_episodes,
    load_episodes,
    set_teacher_context,
    split_episodes,
    target_features,
)
from training.distributed import unwrap_model
from training.metrics import (
    click_f1,
    held_metrics,
    key_accuracy,
    mode_metrics,
    mouse_error_px,
    near_f1,
    target_accuracy,
)

if TYPE_CHECKING:  # the run configs, for the annotations only: training/runs.py builds the Tasks from them
    from training.runs import ExecutorRun, StrategistRun, TacticianRun

log = logging.getLogger(__name__)


def _goal_dim(strategist: nn.Module | None, model: Any) -> int:
    """The size of the goal vector a model reads: the Strategist's goal when one feeds it, else the mode
    one-hot, which needs `model.goal_dim` >= one slot per mode."""
    if strategist is not None:
        return strategist.config.goal_dim
    if model.goal_dim < len(MODES):
        raise DatasetError(
            f"{type(model).__name__}.goal_dim: expected >= {len(MODES)} for mode goals, got {model.goal_dim}"
        )
    return model.goal_dim


def _fit_normalizer(norm: nn.Module, samples: np.ndarray) -> None:
    norm.fit(torch.from_numpy(samples.reshape(-1, samples.shape[-1])))


MUTED_STD = 1e9  # a Normalizer std that maps any feature value to ~0: the feature is ignored, live too


def _mute(norm: nn.Module, columns: list[int]) -> None:
    """Make the model blind to these input columns, in training and live (the statistics ship with it).

    Why (Executor): the cursor of the previous action predicts the next one almost perfectly in the
    expert's smooth mouse paths, so a model that sees it learns "stay where you are" (the copycat problem of
    behavioural cloning) and, playing on its own, never leaves the start position (measured: 0 clicks in
    30 s with the cursor at the centre). Blind to it, the mouse must come from the target and the state.
    """
    with torch.no_grad():
        norm.mean[columns] = 0.0
        norm.std[columns] = MUTED_STD


class _EpisodeTask:
    """Shared part: split by episode, load once, metadata."""

    name = "task"
    phases = 1  # summary phases of the training episodes (load_episode); only the Strategist reads them

    # iou_min: set by the runs that read targets (TacticianRun, ExecutorRun); the Strategist ignores targets
    def __init__(self, data: DataConfig, iou_min: float = 0.3) -> None:
        self.data, self.iou_min = data, iou_min
        self._split: tuple[list[EpisodeArrays], list[EpisodeArrays]] | None = None
        self._test: list[EpisodeArrays] = []
        self._paths: tuple[list[Path], list[Path], list[Path]] | None = None

    def episodes(self) -> tuple[list[EpisodeArrays], list[EpisodeArrays]]:
        """(train, validation) episodes; the test episodes (DataConfig.test_data) load with them, so a bad
        test folder fails before training rather than after it."""
        if self._split is None:
            train_paths, val_paths = split_episodes(self.data)
            test_paths = final_test_episodes(self.data, train_paths + val_paths)
            self._paths = (train_paths, val_paths, test_paths)
            train = load_episodes(train_paths, self.data, self.iou_min, self.phases)
            val = load_episodes(val_paths, self.data, self.iou_min) if val_paths else []
            self._test = load_episodes(test_paths, self.data, self.iou_min) if test_paths else []
            self._prepare(train + val + self._test)
            self._split = (train, val)
        return self._split

    def _prepare(self, episodes: list[EpisodeArrays]) -> None:
        """Hook: attach upstream context to every episode."""

    def _eval_dataset(self, episodes: list[EpisodeArrays]) -> Dataset:
        """The task's dataset over validation or test episodes."""
        raise NotImplementedError

    def val_dataset(self) -> Dataset | None:
        val = self.episodes()[1]
        return self._eval_dataset(val) if val else None

    def test_dataset(self) -> Dataset | None:
        """DataConfig.test_data's episodes, which the loop scores once with the best checkpoint."""
        self.episodes()
        return self._eval_dataset(self._test) if self._test else None

    def metadata(self) -> Mapping[str, Any]:
        self.episodes()
        assert self._paths is not None, "episodes() sets the paths"
        train, val, test = self._paths
        return {
            "obs_spec": OBS_SPEC.to_dict(),
            "modes": list(MODES),
            "data": {
                "labels": self.data.labels,
                "train_episodes": [p.name for p in train],
                "val_episodes": [p.name for p in val],
                "test_episodes": [p.name for p in test],
                "root": str(self.data.data),
                "val_root": None if self.data.val_data is None else str(self.data.val_data),
                "test_root": None if self.data.test_data is None else str(self.data.test_data),
                "extra_roots": [str(p) for p in self.data.extra_data],
            },
        }


# ------------------------------------------------------------------------------------------------ strategist


class StrategistTask(_EpisodeTask):
    name = "strategist"

    def __init__(self, cfg: StrategistRun) -> None:
        super().__init__(cfg.data)
        self.model_cfg = StrategistConfig(**{**cfg.model.__dict__, "d_in": F_SUM, "n_modes": len(MODES)})
        history = cfg.history
        self.history, self.stride = history, cfg.stride or max(1, history // 2)
        self.label_smoothing = self.model_cfg.label_smoothing  # the model's knob, saved with its weights
        self.phases = cfg.phases
        reach = self.model_cfg.receptive_field
        if reach > history:
            log.warning(
                "Strategist: live it reads up to %d s back (n_layers x max_len), its training windows hold %d"
                ": it will meet longer histories than it learnt from (set model.max_len <= %d)",
                reach, history, (history - 1) // self.model_cfg.n_layers + 1,
            )  # fmt: skip

    def build_model(self) -> nn.Module:
        model = Strategist(self.model_cfg)
        train, _ = self.episodes()
        _fit_normalizer(model.norm_in, np.concatenate([e.summary for e in train]))
        return model

    def train_dataset(self) -> StrategistDataset:
        return StrategistDataset(self.episodes()[0], self.history, self.stride)

    def _eval_dataset(self, episodes: list[EpisodeArrays]) -> StrategistDataset:
        return StrategistDataset(episodes, self.history, self.stride)

    def collate(self, samples: list[Any]) -> dict[str, Tensor]:
        return collate_strategist(samples)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        out = model(batch["x"], batch["valid"])
        loss = unwrap_model(model).loss(out, batch["modes"], self.label_smoothing)
        keep = batch["modes"] != IGNORE_INDEX
        acc = (out.mode_logits.argmax(-1)[keep] == batch["modes"][keep]).float().mean()
        return loss, {"mode_acc": float(acc) if keep.any() else 0.0}

    def evaluate(self, model: nn.Module, batches: Iterable[dict[str, Tensor]]) -> dict[str, float]:
        logits, labels, losses = [], [], []
        for batch in batches:
            out = model(batch["x"], batch["valid"])
            losses.append(float(unwrap_model(model).loss(out, batch["modes"], 0.0).detach()))
            keep = batch["modes"] != IGNORE_INDEX
            logits.append(out.mode_logits[keep].float().cpu())
            labels.append(batch["modes"][keep].cpu())
        metrics = mode_metrics(torch.cat(logits), torch.cat(labels), MODES)
        return {"loss": float(np.mean(losses)), **metrics}

    def metadata(self) -> Mapping[str, Any]:
        return {**super().metadata(), "history": self.history, "stride": self.stride,
                "label_smoothing": self.label_smoothing, "phases": self.phases}  # fmt: skip


@torch.no_grad()
def strategist_goals(strategist: Strategist, episode: EpisodeArrays) -> np.ndarray:
    """(R, goal_dim) the Strategist's goal after the last completed second before each row (zeros before)."""
    strategist.eval()
    x = torch.from_numpy(episode.summary).unsqueeze(0)  # (1, S, F_SUM)
    goals = strategist(x).goal[0].numpy()  # (S, goal_dim), causal: step s saw seconds <= s
    k = episode.last_summary
    out = np.zeros((len(k), goals.shape[1]), np.float32)
    out[k >= 0] = goals[k[k >= 0]]
    return out


# ------------------------------------------------------------------------------------------------ tactician


class TacticianTask(_EpisodeTask):
    name = "tactician"

    def __init__(self, cfg: TacticianRun) -> None:
        super().__init__(cfg.data, cfg.iou_min)
        self.strategist_dir = cfg.strategist
        self.strategist = load_model(cfg.strategist, "Strategist") if cfg.strategist else None
        goal_dim = _goal_dim(self.strategist, cfg.model)
        self.model_cfg = TacticianConfig(
            **{
                **cfg.model.__dict__,
                "d_obj": F_OBJ,
                "n_max": OBS_SPEC.n_max,
                "d_ctx": F_GLOB,
                "goal_dim": goal_dim,
            }
        )
        self.hz, self.approach_weight = cfg.hz, cfg.approach_weight

    def _prepare(self, episodes: list[EpisodeArrays]) -> None:
        for ep in episodes:
            set_teacher_context(ep, self.model_cfg.goal_dim)
            if self.strategist is not None:
                ep.extra["goal"] = strategist_goals(self.strategist, ep)

    def build_model(self) -> nn.Module:
        model = Tactician(self.model_cfg)
        train, _ = self.episodes()
        objects = np.concatenate([e.objects[e.mask] for e in train])
        if len(objects):
            _fit_normalizer(model.norm_obj, objects)
        _fit_normalizer(model.norm_ctx, np.concatenate([e.glob for e in train]))
        return model

    def train_dataset(self) -> TacticianDataset:
        return TacticianDataset(self.episodes()[0], self.hz)

    def _eval_dataset(self, episodes: list[EpisodeArrays]) -> TacticianDataset:
        return TacticianDataset(episodes, self.hz)

    def collate(self, samples: list[Any]) -> dict[str, Tensor]:
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}

    def _forward(self, model: nn.Module, batch: dict[str, Tensor]) -> Any:
        return model(batch["objects"], batch["valid"], batch["goal"], batch["context"])

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        out = self._forward(model, batch)
        loss = unwrap_model(model).loss(out, batch["target"], batch["approach"], self.approach_weight)
        acc = (out.target_logits.argmax(-1) == batch["target"]).float().mean()
        return loss, {"target_acc": float(acc)}

    def evaluate(self, model: nn.Module, batches: Iterable[dict[str, Tensor]]) -> dict[str, float]:
        logits, labels, mse, losses = [], [], [], []
        for batch in batches:
            out = self._forward(model, batch)
            losses.append(float(unwrap_model(model).loss(out, batch["target"], batch["approach"]).detach()))
            logits.append(out.target_logits.float().cpu())
            labels.append(batch["target"].cpu())
            mse.append(float(((out.approach - batch["approach"]) ** 2).mean().detach()))
        target = torch.cat(labels)
        return {
            "loss": float(np.mean(losses)),
            "target_acc": target_accuracy(torch.cat(logits), target),
            "target_none_rate": float((target == 0).float().mean()),
            "approach_mse": float(np.mean(mse)),
        }

    def metadata(self) -> Mapping[str, Any]:
        return {**super().metadata(), "hz": self.hz, "iou_min": self.iou_min,
                "goal_source": str(self.strategist_dir) if self.strategist_dir else "labels"}  # fmt: skip


@torch.no_grad()
def tactician_context(tactician: Tactician, episode: EpisodeArrays, hz: float) -> None:
    """Set the episode's target/approach context to the Tactician's choice, run at ~hz and held between."""
    tactician.eval()
    step = max(1, round(episode.fps / hz))
    rows = np.arange(0, len(episode.glob), step)
    out = tactician(
        torch.from_numpy(episode.objects[rows]),
        torch.from_numpy(episode.mask[rows]),
        torch.from_numpy(episode.extra["goal"][rows]),
        torch.from_numpy(episode.glob[rows]),
    )
    slots = out.target_logits.argmax(-1).numpy()  # (D,) per decision row
    chosen = np.where(slots > 0, episode.track_id[rows, np.maximum(slots - 1, 0)], 0)  # (D,) track ids
    held = np.arange(len(episode.glob)) // step  # the latest decision at or before each row
    # slots are re-sorted every frame: follow the chosen track id, "none" once it leaves the object set
    ids = chosen[held]  # (R,)
    hit = episode.mask & (episode.track_id == ids[:, None]) & (ids[:, None] > 0)  # (R, N_MAX)
    row_slots = np.where(hit.any(1), hit.argmax(1) + 1, 0)
    episode.extra["target"] = target_features(episode, row_slots)
    episode.extra["approach"] = out.approach.numpy()[held].astype(np.float32)


# ------------------------------------------------------------------------------------------------ executor


class ExecutorTask(_EpisodeTask):
    name = "executor"

    def __init__(self, cfg: ExecutorRun) -> None:
        super().__init__(cfg.data, cfg.iou_min)
        self.click_balance, self.key_balance = cfg.click_balance, cfg.key_balance
        self.ignore_cursor, self.click_horizon_s = cfg.ignore_cursor, cfg.click_horizon_s
        self.click_pos_weight, self.key_weight = 1.0, None  # set from the training split (_fit_weights)
        self.strategist_dir, self.tactician_dir = cfg.strategist, cfg.tactician
        self.strategist = load_model(cfg.strategist, "Strategist") if cfg.strategist else None
        self.tactician = load_model(cfg.tactician, "Tactician") if cfg.tactician else None
        goal_dim = _goal_dim(self.strategist, cfg.model)
        self.model_cfg = ExecutorConfig(
            **{
                **cfg.model.__dict__,
                "d_frame": F_GLOB,
                "d_target": F_OBJ,
                "approach_dim": 2,
                "goal_dim": goal_dim,
            }
        )
        self.chunk, self.tactician_hz = cfg.chunk, cfg.tactician_hz
        self._frame_size: tuple[int, int] = (1, 1)

    def _prepare(self, episodes: list[EpisodeArrays]) -> None:
        keys = {e.n_keys for e in episodes}
        if len(keys) != 1:
            raise DatasetError(f"ExecutorTask: episodes with different key sets {sorted(keys)}")
        self.model_cfg.n_keys = keys.pop()
        # a held head where the demonstrations hold keys (Action v2: Naev), none where they only tap (Arena)
        holds = any(e.held is not None and bool(e.held.any()) for e in episodes)
        self.model_cfg.n_held = self.model_cfg.n_keys if holds else 0
        self._frame_size = episodes[0].frame_size
        for ep in episodes:
            set_teacher_context(ep, self.model_cfg.goal_dim)
            if self.strategist is not None:
                ep.extra["goal"] = strategist_goals(self.strategist, ep)
            if self.tactician is not None:
                tactician_context(self.tactician, ep, self.tactician_hz)
            if self.click_horizon_s > 0:  # targets = the next click's point and "a click is coming"
                ep.mouse, ep.click = click_destinations(ep.mouse, ep.click, ep.fps, self.click_horizon_s)

    def build_model(self) -> nn.Module:
        train, _ = self.episodes()
        model = Executor(self.model_cfg)
        _fit_normalizer(model.norm_frame, np.concatenate([e.glob for e in train]))
        _fit_normalizer(model.norm_target, np.concatenate([e.extra["target"] for e in train]))
        model.fit_mouse_bins(torch.from_numpy(np.concatenate([e.mouse for e in train])).clamp(0, 1))
        self._fit_weights(train)
        if self.ignore_cursor:
            _mute(model.norm_frame, [GLOB["cursor_x"], GLOB["cursor_y"]])
            _mute(model.norm_target, [OBJ["dx_cursor"], OBJ["dy_cursor"], OBJ["under_cursor"]])
        return model

    def _fit_weights(self, train: list[EpisodeArrays]) -> None:
        """Rare-event weights from the training split: (negatives / positives) ** balance, 1 when absent."""
        clicks = np.concatenate([e.click for e in train])
        self.click_pos_weight = rare_weight(int((~clicks).sum()), int(clicks.sum()), self.click_balance)
        keys = np.bincount(np.concatenate([e.key for e in train]), minlength=self.model_cfg.n_keys)
        none = int(keys[0])
        self.key_weight = torch.tensor(
            [1.0] + [rare_weight(none, int(n), self.key_balance) for n in keys[1:]], dtype=torch.float32
        )

    def train_dataset(self) -> ExecutorDataset:
        return ExecutorDataset(self.episodes()[0], self.chunk)

    def _eval_dataset(self, episodes: list[EpisodeArrays]) -> ExecutorDataset:
        return ExecutorDataset(episodes, self.chunk)

    def collate(self, samples: list[Any]) -> dict[str, Tensor]:
        return collate_executor(samples)

    def _forward(self, model: nn.Module, batch: dict[str, Tensor]) -> Any:
        return model(batch["frame"], batch["goal"], batch["target"], batch["approach"])

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        out = self._forward(model, batch)
        parts = self._losses(unwrap_model(model), out, batch)
        return parts["loss"], {k: v.detach() for k, v in parts.items() if k != "loss"}

    def _losses(self, executor: Executor, out: Any, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return executor.loss(
            out, batch["mouse"].clamp(0, 1), batch["click"], batch["key"], batch["valid"],
            click_pos_weight=self.click_pos_weight, key_weight=self.key_weight, held=batch["held"],
        )  # fmt: skip

    def evaluate(self, model: nn.Module, batches: Iterable[dict[str, Tensor]]) -> dict[str, float]:
        executor = unwrap_model(model)
        pred_xy, true_xy, click_logit, clicks, key_logits, keys, losses = [], [], [], [], [], [], []
        held_pred, held_true = [], []
        for batch in batches:
            out = self._forward(model, batch)
            keep = batch["valid"]
            parts = self._losses(executor, out, batch)
            losses.append(float(parts["loss"].detach()))
            action = executor.decode(out)
            pred_xy.append(action.mouse[keep].float().cpu())
            true_xy.append(batch["mouse"][keep].float().cpu())
            click_logit.append(out.click_logit[keep].float().cpu())
            clicks.append(batch["click"][keep].cpu())
            key_logits.append(out.key_logits[keep].float().cpu())
            keys.append(batch["key"][keep].cpu())
            if action.held is not None:
                held_pred.append(action.held[keep].cpu())
                held_true.append(held_bits(batch["held"][keep], action.held.shape[-1]).bool().cpu())
        key_true, key_logit = torch.cat(keys), torch.cat(key_logits)
        logit, clicked = torch.cat(click_logit), torch.cat(clicks)
        held = held_metrics(torch.cat(held_pred), torch.cat(held_true)) if held_pred else {}
        return {
            **held,
            # clicks are ~2 % of Arena frames: F1 at the best logit threshold shows if they rank well
            "click_f1_tuned": max(
                _nan_to(click_f1(logit > t, clicked)) for t in (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
            ),
            "loss": float(np.mean(losses)),
            "mouse_px": mouse_error_px(torch.cat(pred_xy), torch.cat(true_xy), self._frame_size),
            "click_f1": _nan_to(click_f1(logit, clicked)),
            # a click a few frames early or late does the same in the game: F1 with +-CLICK_SLACK frames
            "click_f1_near": near_f1((logit > 0).numpy(), clicked.numpy(), CLICK_SLACK),
            "click_rate": float(clicked.float().mean()),
            "click_pred_rate": float((logit > 0).float().mean()),
            "key_acc": key_accuracy(key_logit, key_true),
            "key_acc_pressed": _nan_to(key_accuracy(key_logit[key_true > 0], key_true[key_true > 0])),
            "key_f1_near": near_f1((key_logit.argmax(-1) > 0).numpy(), (key_true > 0).numpy(), CLICK_SLACK),
        }

    def metadata(self) -> Mapping[str, Any]:
        return {**super().metadata(), "chunk": self.chunk, "frame_size": list(self._frame_size),
                "goal_source": str(self.strategist_dir) if self.strategist_dir else "labels",
                "target_source": str(self.tactician_dir) if self.tactician_dir else "labels",
                "click_pos_weight": self.click_pos_weight, "ignore_cursor": self.ignore_cursor,
                "click_horizon_s": self.click_horizon_s,
                "key_weight": None if self.key_weight is None else self.key_weight.tolist()}  # fmt: skip


CLICK_SLACK = 3  # frames a click (or key tap) may be early or late for click_f1_near / key_f1_near


def rare_weight(negatives: int, positives: int, balance: float) -> float:
    """(negatives / positives) ** balance: 0 = unweighted, 1 = fully balanced; 1.0 when a side is empty."""
    if positives <= 0 or negatives <= 0:
        return 1.0
    return float((negatives / positives) ** balance)


def _nan_to(value: float, default: float = 0.0) -> float:
    """F1 of a class never labelled nor predicted is NaN; keep eval metrics finite (0) for best/."""
    return default if math.isnan(value) else value


__all__ = [
    "ExecutorTask",
    "rare_weight",
    "StrategistTask",
    "TacticianTask",
    "strategist_goals",
    "tactician_context",
]
