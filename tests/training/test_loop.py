"""The shared training loop on a tiny model and synthetic data: each optimization is applied, resume is exact.

The TinyTask below is also loaded by path by the subprocess scripts of the Ctrl+C and DDP tests.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from training import metrics as M
from training.checkpoint import find_checkpoint, load_checkpoint
from training.config import TrainConfig
from training.errors import (
    CheckpointError,
    NonFiniteLossError,
    TaskError,
    TrainConfigError,
    TrainingInterrupted,
)
from training.loop import run_training, train
from training.optim import EMA, build_optimizer, lr_at, param_groups
from training.resume import EpochBatchSampler
from training.step import evaluate, train_step
from training.task import Task

REPO = Path(__file__).resolve().parents[2]
THIS_FILE = Path(__file__).resolve()
CLASSES = ("FIGHT", "LOOT", "FLEE")


# ------------------------------------------------------------------------------------------------ tiny task


class TinyNet(nn.Module):
    """Linear + Embedding + LayerNorm + dropout, a Mamba-like A_log (2-D) and D (1-D), and a buffer."""

    def __init__(
        self, d_in: int = 6, width: int = 16, n_classes: int = 3, vocab: int = 5, dropout: float = 0.1
    ):
        super().__init__()
        self.proj = nn.Linear(d_in, width)
        self.embed = nn.Embedding(vocab, width)
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, n_classes)
        self.A_log = nn.Parameter(torch.zeros(width, 2))
        self.D = nn.Parameter(torch.ones(width))
        self.A_log._no_weight_decay = True  # as models/mamba.py marks them
        self.D._no_weight_decay = True
        self.register_buffer("scale", torch.ones(d_in))

    def forward(self, x: Tensor, tok: Tensor) -> Tensor:
        h = self.norm(self.proj(x / self.scale) + self.embed(tok))  # (B, width)
        h = h * torch.exp(-self.A_log.exp()).mean(-1) + self.D * h
        return self.head(self.drop(F.gelu(h)))  # (B, n_classes)


class ToyData(Dataset):
    """Samples {"x", "tok", "y", "idx"}: y depends on x and tok; `poison` indices have x = NaN."""

    def __init__(self, n: int, seed: int, poison: tuple[int, ...] = ()) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 6, generator=g)
        self.tok = torch.randint(0, 5, (n,), generator=g)
        self.y = ((self.x[:, 0] > 0).long() + (self.tok > 2).long()) % 3
        for i in poison:
            self.x[i] = math.nan

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.x[i], "tok": self.tok[i], "y": self.y[i], "idx": i}


@dataclass
class TinyTask:
    """A Task on ToyData, with hooks for the tests: poison samples, all-NaN losses, a scripted validation
    metric, a signal sent to this process at the n-th loss call, a delay per step, the sample indices seen."""

    name: str = "tiny"
    n_train: int = 64
    n_val: int = 32
    n_test: int = 0
    dropout: float = 0.1
    poison: tuple[int, ...] = ()
    all_nan: bool = False
    eval_script: list[float] | None = None
    signal_at_call: int | None = None
    signum: int = signal.SIGINT
    sleep_s: float = 0.0
    marker: Path | None = None  # written after `marker_after` loss calls
    marker_after: int = 0
    calls: int = 0
    evals: int = 0
    seen: list[int] = field(default_factory=list)
    autocast_seen: list[tuple[bool, torch.dtype]] = field(default_factory=list)

    def build_model(self) -> nn.Module:
        return TinyNet(dropout=self.dropout)

    def train_dataset(self) -> Dataset:
        return ToyData(self.n_train, seed=1, poison=self.poison)

    def val_dataset(self) -> Dataset | None:
        return ToyData(self.n_val, seed=2) if self.n_val else None

    def test_dataset(self) -> Dataset | None:
        return ToyData(self.n_test, seed=3) if self.n_test else None

    def collate(self, samples: list[Any]) -> Any:
        return default_collate(samples)

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Any]]:
        self.calls += 1
        self.seen.extend(batch["idx"].tolist())
        self.autocast_seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        if self.signal_at_call == self.calls:
            os.kill(os.getpid(), self.signum)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.marker is not None and self.calls == self.marker_after:
            self.marker.write_text("running")
        logits = model(batch["x"], batch["tok"])
        loss = F.cross_entropy(logits.float(), batch["y"])
        if self.all_nan:
            loss = loss * math.nan
        return loss, {"acc": (logits.argmax(-1) == batch["y"]).float().mean()}

    def evaluate(self, model: nn.Module, batches: Any) -> dict[str, float]:
        logits, labels, losses = [], [], []
        for batch in batches:
            out = model(batch["x"], batch["tok"]).float()
            logits.append(out)
            labels.append(batch["y"])
            losses.append(F.cross_entropy(out, batch["y"], reduction="sum"))
        logits_all, labels_all = torch.cat(logits), torch.cat(labels)
        result = {
            "loss": float(sum(losses)) / len(labels_all),
            **M.mode_metrics(logits_all, labels_all, CLASSES),
        }
        if self.eval_script is not None:
            result["score"] = self.eval_script[self.evals]
        self.evals += 1
        return result

    def metadata(self) -> dict[str, Any]:
        return {"obs_spec": "tiny-v1"}


def tiny_config(out_dir: Path, **overrides: Any) -> TrainConfig:
    """8 steps per epoch (64 samples, batch 8), 3 epochs, small warm-up, no progress bar."""
    base: dict[str, Any] = dict(
        out_dir=out_dir, lr=3e-2, weight_decay=0.1, warmup_steps=3, min_lr_ratio=0.1, epochs=3, batch_size=8,
        clip_norm=1.0, ema_decay=0.9, seed=7, device="cpu", log_every=2, progress=False,
    )  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)


def state_of(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def optimizer_tensors(path: Path) -> dict[str, Tensor]:
    return load_file(str(path / "optimizer.safetensors"))


# ------------------------------------------------------------------------------------------------ config


def test_tiny_task_is_a_task() -> None:
    assert isinstance(TinyTask(), Task)


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("lr", 0.0),
        ("betas", (0.9,)),
        ("grad_accum", 0),
        ("device", "tpu"),
        ("bf16", "yes"),
        ("best_mode", "up"),
        ("ema_decay", 1.0),
        ("min_lr_ratio", 1.5),
        ("compile", 1),
        ("epochs", True),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, field_name: str, value: Any) -> None:
    with pytest.raises(TrainConfigError, match=rf"^TrainConfig\.{field_name}: expected .*, got "):
        tiny_config(tmp_path, **{field_name: value})


def test_batch_larger_than_dataset_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(TrainConfigError, match=r"TrainConfig\.batch_size"):
        train(TinyTask(n_train=10), tiny_config(tmp_path, batch_size=8, grad_accum=2))


def test_new_run_refuses_to_overwrite_a_checkpoint(tmp_path: Path) -> None:
    train(TinyTask(), tiny_config(tmp_path, epochs=1))
    with pytest.raises(TrainConfigError, match=r"TrainConfig\.resume: expected 'auto'"):
        train(TinyTask(), tiny_config(tmp_path, epochs=1))


def test_loss_that_is_not_a_scalar_is_a_task_error(tmp_path: Path) -> None:
    class Bad(TinyTask):
        def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Any]]:
            return model(batch["x"], batch["tok"]).sum(-1), {}

    with pytest.raises(TaskError, match="scalar tensor"):
        train(Bad(), tiny_config(tmp_path, epochs=1))


# ------------------------------------------------------------------------------------------------ optimizer


def test_param_groups_decay_only_matmul_weights() -> None:
    groups = param_groups(TinyNet(), weight_decay=0.1)
    by_decay = {g["weight_decay"]: set(g["param_names"]) for g in groups}
    assert by_decay[0.1] == {"proj.weight", "head.weight"}
    assert by_decay[0.0] == {
        "proj.bias",
        "head.bias",
        "embed.weight",
        "norm.weight",
        "norm.bias",
        "A_log",
        "D",
    }
    for g in groups:  # names and tensors line up
        assert len(g["params"]) == len(g["param_names"])


def test_param_groups_of_the_real_mamba_block() -> None:
    from models.mamba import MambaBlock, MambaConfig

    groups = param_groups(MambaBlock(MambaConfig(d_model=8, d_state=4)), weight_decay=0.1)
    no_decay = next(set(g["param_names"]) for g in groups if g["weight_decay"] == 0.0)
    assert {"A_log", "D", "dt_proj.bias"} <= no_decay
    decayed = next(set(g["param_names"]) for g in groups if g["weight_decay"] > 0)
    assert "in_proj.weight" in decayed and "A_log" not in decayed


def test_optimizer_is_adamw_with_the_groups(tmp_path: Path) -> None:
    optimizer = build_optimizer(TinyNet(), tiny_config(tmp_path), torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95)


def test_lr_schedule_warmup_cosine_floor(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    total = 14  # 10 cosine steps after warm-up
    assert [lr_at(s, cfg, total) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_at(4, cfg, total) == pytest.approx(1.0)  # cosine starts at the peak
    assert lr_at(9, cfg, total) == pytest.approx(0.55)  # half-way: (peak + floor) / 2
    assert lr_at(13, cfg, total) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.9)))
    assert lr_at(14, cfg, total) == pytest.approx(0.1) and lr_at(100, cfg, total) == pytest.approx(0.1)
    values = [lr_at(s, cfg, total) for s in range(4, 15)]
    assert all(a > b for a, b in zip(values, values[1:]))  # strictly decreasing to the floor


def _one_batch(n: int = 8, seed: int = 0, poison: tuple[int, ...] = ()) -> dict[str, Tensor]:
    data = ToyData(n, seed=seed, poison=poison)
    return default_collate([data[i] for i in range(n)])


def test_gradient_clipping_is_applied() -> None:
    torch.manual_seed(0)
    model = TinyNet(dropout=0.0)
    optimizer = torch.optim.AdamW(param_groups(model, 0.0), lr=1e-3)
    out = train_step(model, TinyTask(), optimizer, [_one_batch()], clip_norm=1e-3)
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert out.finite and out.grad_norm > 1e-2  # the raw norm was far above the limit
    assert float(clipped) == pytest.approx(1e-3, rel=1e-4)


def test_nan_batch_is_skipped_and_leaves_weights_untouched() -> None:
    torch.manual_seed(0)
    model = TinyNet(dropout=0.0)
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-2)
    train_step(model, TinyTask(), optimizer, [_one_batch()], clip_norm=1.0)  # one good step first
    before, moments = state_of(model), {k: v.clone() for k, v in optimizer.state[model.proj.weight].items()}
    out = train_step(model, TinyTask(), optimizer, [_one_batch(poison=(3,))], clip_norm=1.0)
    assert not out.finite and math.isnan(out.loss)
    assert_same(before, state_of(model))
    for key, value in optimizer.state[model.proj.weight].items():
        assert torch.equal(value, moments[key]), key
    assert all(p.grad is None for p in model.parameters())  # NaN gradients are not left behind


def test_nan_batches_are_counted_in_a_run(tmp_path: Path) -> None:
    # Sample 5 sits in exactly one step per epoch: 3 epochs -> 3 skipped steps, the rest trains.
    result = train(TinyTask(poison=(5,)), tiny_config(tmp_path))
    assert result.step == 24 and result.skipped_steps == 3
    assert all(math.isfinite(v) for v in state_of(result.model)["proj.weight"].flatten().tolist())
    saved = json.loads((tmp_path / "last" / "trainer_state.json").read_text())
    assert saved["skipped_steps"] == 3


def test_too_many_consecutive_nonfinite_steps_stop_with_one_line(tmp_path: Path) -> None:
    task = TinyTask(all_nan=True)
    with pytest.raises(NonFiniteLossError) as info:
        train(task, tiny_config(tmp_path, max_consecutive_nonfinite=3))
    message = str(info.value)
    assert "\n" not in message and "3 optimizer steps in a row" in message
    assert "max_consecutive_nonfinite" in message
    assert task.calls == 3  # stopped at once, not after the epoch
    assert run_training(TinyTask(all_nan=True), tiny_config(tmp_path / "b", max_consecutive_nonfinite=2)) == 1


def test_ema_update_follows_the_warmed_up_decay() -> None:
    model = nn.Linear(2, 2)
    ema = EMA(model, decay=0.99)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # first decay: min(0.99, 1 / 10) = 0.1
    assert torch.allclose(ema.module.weight, 0.1 * start + 0.9 * model.weight)
    assert ema.decay_at(10_000) == 0.99


def test_ema_differs_from_raw_and_is_what_model_safetensors_holds(tmp_path: Path) -> None:
    result = train(TinyTask(), tiny_config(tmp_path))
    raw, averaged = state_of(result.model), state_of(result.ema_model)
    assert not torch.equal(raw["proj.weight"], averaged["proj.weight"])
    assert_same(averaged, load_file(str(tmp_path / "last" / "model.safetensors")))
    assert_same(raw, load_file(str(tmp_path / "last" / "raw.safetensors")))
    assert torch.equal(averaged["scale"], raw["scale"])  # buffers are copied, not averaged


def test_no_ema_saves_raw_weights(tmp_path: Path) -> None:
    result = train(TinyTask(), tiny_config(tmp_path, epochs=1, ema_decay=0.0))
    assert result.ema_model is result.model
    assert_same(state_of(result.model), load_file(str(tmp_path / "last" / "model.safetensors")))


def test_gradient_accumulation_matches_a_bigger_batch(tmp_path: Path) -> None:
    big = train(TinyTask(dropout=0.0), tiny_config(tmp_path / "a", batch_size=8, grad_accum=1, epochs=2))
    accum = train(TinyTask(dropout=0.0), tiny_config(tmp_path / "b", batch_size=4, grad_accum=2, epochs=2))
    assert big.step == accum.step == 16
    for key, value in state_of(big.model).items():
        torch.testing.assert_close(state_of(accum.model)[key], value, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_is_applied_when_asked(tmp_path: Path) -> None:
    on, auto = TinyTask(), TinyTask()
    result = train(on, tiny_config(tmp_path / "on", epochs=1, bf16="on"))
    assert all(enabled and dtype == torch.bfloat16 for enabled, dtype in on.autocast_seen)
    assert math.isfinite(result.metrics["eval/loss"])
    train(auto, tiny_config(tmp_path / "auto", epochs=1, bf16="auto"))  # auto = CUDA only
    assert not any(enabled for enabled, _ in auto.autocast_seen)


def test_torch_compile_is_applied_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[nn.Module] = []

    def fake_compile(model: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        compiled.append(model)
        return model  # compiling for real needs a C++ toolchain and minutes; the wiring is what is tested

    monkeypatch.setattr(torch, "compile", fake_compile)
    result = train(TinyTask(), tiny_config(tmp_path, epochs=1, compile=True))
    assert compiled == [result.model]


# ------------------------------------------------------------------------------------------------ data order


def test_epoch_sampler_is_a_seeded_permutation_sharded_by_rank() -> None:
    def batches(epoch: int, rank: int = 0, world: int = 1, start: int = 0) -> list[list[int]]:
        return list(EpochBatchSampler(20, 4, 20 // world // 4, 3, epoch, rank, world, start))

    full = batches(0)
    assert sorted(i for b in full for i in b) == list(range(20))
    assert full == batches(0) and full != batches(1)  # same (seed, epoch) -> same order; epochs differ
    assert batches(0, start=2) == full[2:]  # resuming skips consumed batches
    shards = [set(i for b in batches(0, r, 2) for i in b) for r in (0, 1)]
    assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 8


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path) -> None:
    a = train(TinyTask(), tiny_config(tmp_path / "a", epochs=2))
    b = train(TinyTask(), tiny_config(tmp_path / "b", epochs=2))
    c = train(TinyTask(), tiny_config(tmp_path / "c", epochs=2, seed=8))
    assert_same(state_of(a.model), state_of(b.model))
    assert_same(state_of(a.ema_model), state_of(b.ema_model))
    assert not torch.equal(state_of(a.model)["proj.weight"], state_of(c.model)["proj.weight"])


# ------------------------------------------------------------------------------------------------ resume


@pytest.mark.parametrize(("grad_accum", "stop_call"), [(1, 13), (2, 16), (1, 8)])
def test_interrupted_and_resumed_run_is_bit_identical(
    tmp_path: Path, grad_accum: int, stop_call: int
) -> None:
    """SIGINT mid-epoch (or on an epoch's last step), resume, compare with an uninterrupted run: exact."""
    batch = 8 // grad_accum
    reference = train(TinyTask(), tiny_config(tmp_path / "ref", batch_size=batch, grad_accum=grad_accum))
    cfg = tiny_config(tmp_path / "run", batch_size=batch, grad_accum=grad_accum)
    with pytest.raises(TrainingInterrupted) as info:
        train(TinyTask(signal_at_call=stop_call), cfg)
    assert info.value.exit_code == 130 and info.value.step == stop_call // grad_accum
    saved = json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())
    assert saved["step"] == stop_call // grad_accum
    assert (
        saved["epoch"] * 8 * grad_accum + saved["batch_index"] == stop_call
    )  # data position, in micro-batches
    resumed_task = TinyTask()
    resumed = train(
        resumed_task, tiny_config(tmp_path / "run", batch_size=batch, grad_accum=grad_accum, resume="auto")
    )
    assert resumed_task.calls == 24 * grad_accum - stop_call  # consumed batches were skipped, not reloaded
    assert resumed.step == reference.step == 24
    assert_same(state_of(reference.model), state_of(resumed.model))
    assert_same(state_of(reference.ema_model), state_of(resumed.ema_model))
    assert_same(optimizer_tensors(tmp_path / "ref" / "last"), optimizer_tensors(tmp_path / "run" / "last"))
    assert reference.metrics == resumed.metrics and reference.best_step == resumed.best_step


def test_sigterm_also_saves_and_stops(tmp_path: Path) -> None:
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        train(TinyTask(signal_at_call=5, signum=signal.SIGTERM), tiny_config(tmp_path))
    assert info.value.exit_code == 143 and info.value.checkpoint == tmp_path / "last"
    assert json.loads((tmp_path / "last" / "trainer_state.json").read_text())["step"] == 5
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # put back


def test_resume_into_a_mismatched_model_is_a_one_line_error(tmp_path: Path) -> None:
    train(TinyTask(), tiny_config(tmp_path, epochs=1))

    class Wider(TinyTask):
        def build_model(self) -> nn.Module:
            return TinyNet(width=24)

    with pytest.raises(CheckpointError) as info:
        train(Wider(), tiny_config(tmp_path, epochs=2, resume="auto"))
    message = str(info.value)
    assert "\n" not in message and "last/raw.safetensors: tensor 'A_log' has shape (16, 2)" in message


_SCRIPT = textwrap.dedent(
    """
    import importlib.util, logging, sys, torch
    from pathlib import Path
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    spec = importlib.util.spec_from_file_location("tiny_loop_test", {test_file!r})
    tiny = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tiny  # dataclasses look their module up there
    spec.loader.exec_module(tiny)
    from safetensors.torch import save_file
    from training.loop import run_training, train
    out, mode = Path(sys.argv[1]), sys.argv[2]
    """
)


def _write_script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "script.py"
    script.write_text(_SCRIPT.format(test_file=str(THIS_FILE)) + textwrap.dedent(body))
    return script


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_ctrl_c_in_a_subprocess_saves_exits_nonzero_and_resumes_exactly(tmp_path: Path) -> None:
    script = _write_script(
        tmp_path,
        """
        marker = out / "marker"
        task = tiny.TinyTask(sleep_s=0.2 if mode == "interrupt" else 0.0, marker=marker, marker_after=6)
        cfg = tiny.tiny_config(out / "run", resume="" if mode != "resume" else "auto")
        sys.exit(run_training(task, cfg))
        """,
    )
    out = tmp_path
    proc = subprocess.Popen([sys.executable, str(script), str(out), "interrupt"], env=_env(), cwd=REPO)
    deadline = time.monotonic() + 60
    while not (out / "marker").exists():
        assert proc.poll() is None, "the run ended before it was interrupted"
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    state = json.loads((out / "run" / "last" / "trainer_state.json").read_text())
    assert 6 <= state["step"] < 24  # stopped mid-run at a step boundary
    resumed = subprocess.run(
        [sys.executable, str(script), str(out), "resume"], env=_env(), cwd=REPO, timeout=120
    )
    assert resumed.returncode == 0
    (out / "marker").unlink()
    script_ref = script.with_name("ref.py")
    script_ref.write_text(script.read_text().replace('out / "run"', 'out / "ref"'))
    reference = subprocess.run(
        [sys.executable, str(script_ref), str(out), "plain"], env=_env(), cwd=REPO, timeout=120
    )
    assert reference.returncode == 0
    for name in ("model.safetensors", "raw.safetensors", "optimizer.safetensors"):
        assert_same(load_file(str(out / "ref" / "last" / name)), load_file(str(out / "run" / "last" / name)))


# ------------------------------------------------------------------------------------------------ outputs


def test_best_is_the_best_validation_metric_and_a_real_copy(tmp_path: Path) -> None:
    task = TinyTask(eval_script=[0.2, 0.9, 0.5])
    result = train(task, tiny_config(tmp_path, best_metric="score", best_mode="max"))
    assert result.best_metric == 0.9 and result.best_step == 16  # end of epoch 2 (8 steps per epoch)
    best, last = tmp_path / "best", tmp_path / "last"
    assert json.loads((best / "trainer_state.json").read_text())["step"] == 16
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 24
    assert not best.is_symlink() and not any(p.is_symlink() for p in best.iterdir())
    assert (best / "model.safetensors").stat().st_ino != (last / "model.safetensors").stat().st_ino
    assert (best / "model.safetensors").read_bytes() != (last / "model.safetensors").read_bytes()
    loaded = TinyNet()
    load_checkpoint(best, loaded)  # best/ is a complete, loadable checkpoint
    assert result.metrics["eval/score"] == 0.5


def test_test_set_is_scored_once_with_the_best_weights(tmp_path: Path) -> None:
    task = TinyTask(eval_script=[0.2, 0.9, 0.5, 0.0], n_test=16)  # the 4th evaluation is the test
    result = train(task, tiny_config(tmp_path, best_metric="score", best_mode="max"))
    assert task.evals == 4
    record = json.loads((tmp_path / "test_metrics.json").read_text())
    assert record["checkpoint"] == "best" and record["step"] == 16 and record["samples"] == 16
    assert result.test_metrics == record["metrics"]

    def scored(folder: Path) -> dict[str, float]:
        model = TinyNet()
        model.load_state_dict(load_file(str(folder / "model.safetensors")))  # the EMA weights of the folder
        batches = [default_collate([ToyData(16, seed=3)[i] for i in range(16)])]
        return evaluate(TinyTask(), model, batches)

    expected, last = scored(tmp_path / "best"), scored(tmp_path / "last")
    assert record["metrics"]["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert record["metrics"]["mode_acc"] == expected["mode_acc"]
    assert last["loss"] != pytest.approx(expected["loss"], rel=1e-6)  # it is best/, not the last weights


def test_no_test_set_no_test_metrics(tmp_path: Path) -> None:
    result = train(TinyTask(), tiny_config(tmp_path, epochs=1))
    assert result.test_metrics is None and not (tmp_path / "test_metrics.json").exists()


def test_best_metric_min_mode_and_missing_metric(tmp_path: Path) -> None:
    result = train(
        TinyTask(eval_script=[0.5, 0.1, 0.3]), tiny_config(tmp_path / "a", best_metric="eval/score")
    )
    assert result.best_metric == 0.1 and result.best_step == 16
    with pytest.raises(TrainConfigError, match=r"TrainConfig\.best_metric: .*'mode_acc'"):
        train(TinyTask(), tiny_config(tmp_path / "b", epochs=1, best_metric="nope"))


def test_validation_reports_the_real_metrics(tmp_path: Path) -> None:
    result = train(TinyTask(), tiny_config(tmp_path, epochs=1))
    for key in (
        "eval/loss",
        "eval/mode_acc",
        "eval/mode_f1_macro",
        "eval/mode_f1_fight",
        "eval/mode_f1_flee",
    ):
        assert key in result.metrics
    assert 0.0 <= result.metrics["eval/mode_acc"] <= 1.0


def test_tensorboard_scalars_are_namespaced(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(tmp_path)
    train(TinyTask(), cfg)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "train/acc",
        "train/skipped_steps",
        "train/epoch",
    }
    expected |= {"perf/samples_per_s", "perf/steps_per_s"}
    expected |= {"eval/loss", "eval/mode_acc", "eval/mode_f1_macro", "eval/mode_f1_loot", "eval/best_loss"}
    assert expected <= tags
    lrs = {e.step: e.value for e in events.Scalars("train/lr")}
    assert lrs[2] == pytest.approx(lr_at(1, cfg, 24)) and lrs[24] == pytest.approx(lr_at(23, cfg, 24))
    assert [e.step for e in events.Scalars("eval/mode_acc")] == [8, 16, 24]


def test_checkpoint_config_json_is_complete(tmp_path: Path) -> None:
    train(TinyTask(), tiny_config(tmp_path, epochs=1))
    config = json.loads((tmp_path / "last" / "config.json").read_text())
    assert config["format"] == "orbit-pilot-model" and config["class"] == "TinyNet"
    assert config["train"]["lr"] == 3e-2 and config["train"]["betas"] == [0.9, 0.95]
    assert config["task"] == "tiny" and config["metadata"] == {"obs_spec": "tiny-v1"}
    assert "torch" in config["versions"]
    assert find_checkpoint(tmp_path) == tmp_path / "last"


# ------------------------------------------------------------------------------------------------ DDP


def test_ddp_with_torchrun_gloo_two_processes(tmp_path: Path) -> None:
    script = _write_script(
        tmp_path,
        """
        import torch.distributed as dist
        task = tiny.TinyTask()
        result = train(task, tiny.tiny_config(out / "run", epochs=2, batch_size=4))
        rank = int(__import__("os").environ["RANK"])
        weights = {k: v.contiguous() for k, v in result.model.state_dict().items()}
        save_file(weights, str(out / f"rank{rank}.safetensors"))
        (out / f"seen{rank}.txt").write_text(" ".join(map(str, task.seen[: 8 * 4])))
        """,
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += [str(script), str(tmp_path), "ddp"]
    done = subprocess.run(command, env=_env(), cwd=REPO, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same(
        load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    )
    seen = [set(map(int, (tmp_path / f"seen{r}.txt").read_text().split())) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 32 and not seen[0] & seen[1]  # each rank its own half of epoch 0
    state = json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 16 and len(state["rng"]) == 2
    raw = load_file(str(tmp_path / "run" / "last" / "raw.safetensors"))
    assert_same(raw, load_file(str(tmp_path / "rank0.safetensors")))


@pytest.mark.slow
def test_ddp_interrupted_and_resumed_run_is_bit_identical(tmp_path: Path) -> None:
    """Rank 1 alone gets SIGINT: both ranks stop at the same step, save once, and resume exactly (~20 s)."""
    script = _write_script(
        tmp_path,
        """
        import os
        rank = int(os.environ["RANK"])
        task = tiny.TinyTask(signal_at_call=11 if mode == "interrupt" and rank == 1 else None)
        folder = out / ("ref" if mode == "ref" else "run")
        sys.exit(run_training(task, tiny.tiny_config(folder, epochs=2, batch_size=4, resume="auto")))
        """,
    )
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
    ]
    for mode in ("ref", "interrupt", "resume"):
        done = subprocess.run(
            [*torchrun, str(tmp_path), mode], env=_env(), cwd=REPO, timeout=300, capture_output=True
        )
        assert (done.returncode == 0) == (mode != "interrupt"), done.stderr[-3000:]
        if mode == "interrupt":
            state = json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())
            assert state["step"] == 11 and len(state["rng"]) == 2
    for name in ("model.safetensors", "raw.safetensors", "optimizer.safetensors"):
        assert_same(
            load_file(str(tmp_path / "ref" / "last" / name)), load_file(str(tmp_path / "run" / "last" / name))
        )
